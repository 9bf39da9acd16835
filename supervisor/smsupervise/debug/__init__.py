"""Sidecar debug mode: the control socket, the /proc views, and the smsupervise-debug client."""
