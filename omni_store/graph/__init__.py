"""The GraphQL layer: types, inputs, queries, mutations, loaders, context, auth, app, CLI.

No SQL here: every read and write goes through ``omni_store.persistence``.
"""
