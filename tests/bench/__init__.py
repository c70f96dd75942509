"""The benchmark of the message store (run by hand, never collected by pytest).

See the "Benchmarks" section of the README for the commands.
"""
