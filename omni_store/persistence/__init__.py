"""Tables, the normalized-message contract, tenant-scoped repositories and the persist service.

Never imports ``omni_store.graph``.
"""
