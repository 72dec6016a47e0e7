"""The HTTP API: the route table, one module per front door, and the shared rendering of router metadata."""
