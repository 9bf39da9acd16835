"""Which rank failed first, read from the launcher's own summary. Pure.

torchrun ends a failed run with ``Root Cause (first observed failure):`` followed by ``rank : R
(local_rank: L)`` and ``exitcode : C`` (``torch.distributed.elastic.multiprocessing.errors``);
mpirun names the process (``Process name: [[J,1],R]``) in its "returned a non-zero exit code" or
"exited on signal" report, or the rank that called ``MPI_ABORT`` (mpi4py does on an exception).
"""

from __future__ import annotations

import re
from typing import NamedTuple

_TORCHRUN = re.compile(
    rb"Root Cause \(first observed failure\):.*?rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)"
    rb".*?exitcode\s*:\s*(-?\d+)",
    re.DOTALL,
)
_MPIRUN = re.compile(rb"Process name:\s*\[\[\d+,\d+\],(\d+)\]|MPI_ABORT was invoked on rank (\d+)")


class FailedRank(NamedTuple):
    """The first rank that failed on this host, as the launcher reported it."""

    rank: int
    local_rank: int | None
    exit_code: int | None


def first_failed(stderr: bytes, processes_per_host: int) -> FailedRank | None:
    """The launcher's root cause in ``stderr`` (its tail), or None when it does not say."""
    found = _TORCHRUN.search(stderr)
    if found is not None:
        return FailedRank(int(found.group(1)), int(found.group(2)), int(found.group(3)))
    named = _MPIRUN.search(stderr)
    if named is not None:
        rank = int(named.group(1) or named.group(2))
        return FailedRank(rank, rank % processes_per_host if processes_per_host else None, None)
    return None
