"""Distributed training: the toolkit's runners (torchrun, mpirun), peers, fail-fast, rank logs."""
