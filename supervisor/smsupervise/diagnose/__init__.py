"""The diagnosis wing: why a job died or is in trouble (OOM kills, full filesystems, a failure class)."""
