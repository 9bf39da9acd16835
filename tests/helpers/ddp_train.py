"""A DDP (gloo, CPU) training job for tests/distributed: records what each rank saw, trains a small
model on a fixed dataset, saves/resumes through SMSUPERVISE_CHECKPOINT_DIR, and can fail on purpose.

Run under torchrun (the environment gives RANK, WORLD_SIZE, ...) or alone (one process, the whole
batch): with the same seed both end with the same weights, because DDP averages the gradients of
equal shards of the batch. Options (hyperparameters): --steps N, --fail-rank R --fail-step S (S = 0:
before joining the process group), --timeout SECONDS (gloo), --step-seconds T (pace), --out DIR.
"""

import argparse
import datetime
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--fail-rank", type=int, default=-1)
parser.add_argument("--fail-step", type=int, default=-1)
parser.add_argument("--timeout", type=float, default=60)
parser.add_argument("--step-seconds", type=float, default=0)
parser.add_argument("--out", default="/opt/ml/output/data")
args, _ = parser.parse_known_args()

torch.set_num_threads(1)
rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
os.makedirs(args.out, exist_ok=True)
seen = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
seen["hostname"] = socket.gethostname()
with open(os.path.join(args.out, f"rank-{rank}.json"), "w") as f:
    json.dump(seen, f)
print(f"rank {rank} of {world} on {seen['hostname']}", flush=True)


def maybe_fail(step: int) -> None:
    if rank == args.fail_rank and step == args.fail_step:
        print(f"failing at {time.time():.3f}", flush=True)
        raise ValueError(f"rank {rank} fails at step {step} on purpose")


maybe_fail(0)
if world > 1:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=args.timeout))
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
if world > 1:
    model = torch.nn.parallel.DistributedDataParallel(model)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
data = torch.randn(48, 8, generator=torch.Generator().manual_seed(1))
target = data.sum(dim=1, keepdim=True).sin()
shard = slice(rank * len(data) // world, (rank + 1) * len(data) // world)
ckpt = os.path.join(os.environ.get("SMSUPERVISE_CHECKPOINT_DIR", "/opt/ml/checkpoints"), f"rank-{rank}.pt")
start = 0
if os.path.exists(ckpt):
    state = torch.load(ckpt)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start = state["step"]
    print(f"resumed at step {start}", flush=True)


def leave() -> None:
    """End as a DDP job should: every rank done communicating, the process group destroyed, then
    out without interpreter finalization. Leaving with the group alive, or tearing it down while a
    peer still sends, can kill a rank with SIGABRT at exit ("terminate called without an active
    exception": gloo's threads outlive the interpreter; seen in loaded runs of tests/distributed,
    after "saved at step N" and after the last step)."""
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


stopping = []
signal_module = __import__("signal")
signal_module.signal(signal_module.SIGTERM, lambda *_: stopping.append(1))
for step in range(start, args.steps):
    asked = torch.tensor([1.0 if stopping else 0.0])
    if world > 1:  # every rank stops at the same step, or the others would wait in the next collective
        dist.all_reduce(asked, op=dist.ReduceOp.MAX)
    if asked.item() > 0:
        os.makedirs(os.path.dirname(ckpt), exist_ok=True)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
        torch.save(state, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
        print(f"saved at step {step}", flush=True)
        leave()
    if step == start:
        print(f"first step {step} at {time.time():.3f}", flush=True)
    maybe_fail(step)
    loss = torch.nn.functional.mse_loss(model(data[shard]), target[shard])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    time.sleep(args.step_seconds)
if rank == 0:
    module = model.module if world > 1 else model
    torch.save(module.state_dict(), os.path.join(args.out, "weights.pt"))
    print(f"done: loss {loss.item():.6f}", flush=True)
leave()
