"""Tests of the diagnosis wing: OOM attribution, filesystems, failure classes."""
