"""The serve front and --also: real processes, real sockets (as PID 1 and as subreaper)."""
