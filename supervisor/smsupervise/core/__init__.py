"""The PID-1 kernel: the only folder that creates, waits for or signals processes."""
