"""Bytes out: our own events and the child's output, framed and written without blocking."""
