"""A real PyTorch training loop for tests/process/test_torch.py: saves model and optimizer state
through smsupervise.checkpoint when the job is stopped, and resumes from it.

usage: torch_train.py STEPS LOSSES_JSON PROGRESS_FILE
"""

import json
import os
import sys
import time

import torch

from smsupervise import checkpoint

steps, losses_out, progress = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)  # has state of its own: moments
path = os.path.join(os.environ["SMSUPERVISE_CHECKPOINT_DIR"], "state.pt")
os.makedirs(os.path.dirname(path), exist_ok=True)
done, losses = 0, []
if os.path.exists(path):
    state = torch.load(path)
    model.load_state_dict(state["model"])
    if not os.environ.get("FORGET_OPTIMIZER"):  # the negative twin's deliberate mistake
        optimizer.load_state_dict(state["optimizer"])
    done, losses = state["step"], state["losses"]
    print(f"resumed at step {done}", flush=True)


def save() -> None:
    temporary = path + ".tmp"
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done, "losses": losses}
    torch.save(state, temporary)
    os.replace(temporary, path)
    print(f"saved at step {done}", flush=True)


stop = checkpoint.register(save)
for step in range(done, steps):
    generator = torch.Generator().manual_seed(step)  # the batch depends on the step only
    x = torch.randn(32, 8, generator=generator)
    y = x.sum(dim=1, keepdim=True).sin()
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    done = step + 1
    with open(progress, "w") as handle:
        handle.write(str(done))
    time.sleep(0.02)
    if stop.save_point():
        sys.exit(0)
with open(losses_out, "w") as handle:
    json.dump(losses, handle)
