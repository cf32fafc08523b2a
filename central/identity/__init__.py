"""Identity at central: projects, users, roles, application credentials, tokens.

``passwords`` hashes secrets, ``signing`` holds token-signing keys, ``snapshot``
builds the identity section of desired-state documents (and the snapshot
central itself verifies tokens against), ``service`` is what the API calls.
"""
