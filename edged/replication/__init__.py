"""Object replication between sites and central (and between peer sites) over ZeroMQ CURVE."""
