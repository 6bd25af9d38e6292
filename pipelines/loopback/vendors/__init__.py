"""One module per vendor wire protocol, each a ``WireServer`` (``pipelines.loopback.base``).
Import the servers from ``pipelines.loopback``."""
