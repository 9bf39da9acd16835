"""An mpi4py job for tests/distributed/test_mpi.py: every rank writes what it saw, and an allreduce
checks that the ranks of both hosts talk. --fail-rank R makes rank R raise (mpi4py then aborts)."""

import argparse
import json
import os
import socket

from mpi4py import MPI

parser = argparse.ArgumentParser()
parser.add_argument("--fail-rank", type=int, default=-1)
args, _ = parser.parse_known_args()
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
total = comm.allreduce(rank + 1, op=MPI.SUM)
print(f"rank {rank} of {size} on {socket.gethostname()}: sum {total}", flush=True)
if rank == args.fail_rank:
    raise ValueError(f"rank {rank} fails on purpose")
out = "/opt/ml/output/data"
os.makedirs(out, exist_ok=True)
seen = {
    "rank": rank,
    "size": size,
    "host": socket.gethostname(),
    "sum": total,
    "sm_hosts": os.environ.get("SM_HOSTS"),
}
with open(os.path.join(out, f"mpi-rank-{rank}.json"), "w") as f:
    json.dump(seen, f)
comm.Barrier()
