"""The smsupervise-local demo job: linear regression by SGD (standard library only).

Reads two File channels (``train``, ``validation``: CSV files), streams a Pipe channel (``events``:
FIFO ``events_0``) to the end, prints one metrics line per epoch (``epoch=3 train_mse=0.01;
validation_mse=0.02;``, which the request's MetricDefinitions pick up), saves a checkpoint per epoch
atomically in SMSUPERVISE_CHECKPOINT_DIR (keeping the last two), resumes from the newest one, and on
SIGTERM finishes the epoch, saves and exits 0.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import signal
import sys
import time


def points(channel: str) -> list[tuple[float, float]]:
    found = []
    for path in sorted(glob.glob(os.path.join(os.environ[f"SM_CHANNEL_{channel.upper()}"], "*.csv"))):
        with open(path) as handle:
            next(handle)
            found += [tuple(map(float, line.split(","))) for line in handle]  # type: ignore[misc]
    return found


def stream(channel: str) -> int:
    """Read epoch 0 of a Pipe channel to EOF; returns the bytes read."""
    fifo = os.environ[f"SM_CHANNEL_{channel.upper()}"] + "_0"
    deadline = time.monotonic() + 60
    while not os.path.exists(fifo):  # the platform creates the FIFO; it may come a little later
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"Pipe channel {channel!r}: {fifo} never appeared")
        time.sleep(0.05)
    total = 0
    with open(fifo, "rb") as handle:
        while chunk := handle.read(1 << 20):
            total += len(chunk)
    return total


def mse(w: float, b: float, data: list[tuple[float, float]]) -> float:
    return sum((w * x + b - y) ** 2 for x, y in data) / len(data)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--step-seconds", type=float, default=0.0)
    args = parser.parse_args()
    train, validation = points("train"), points("validation")
    print(f"streamed {stream('events')} bytes from the Pipe channel 'events'", flush=True)
    directory = os.environ.get("SMSUPERVISE_CHECKPOINT_DIR", "/opt/ml/checkpoints")
    os.makedirs(directory, exist_ok=True)
    saved = sorted(glob.glob(os.path.join(directory, "epoch-*.json")))
    state = {"epoch": 0, "w": 0.0, "b": 0.0}
    if saved:
        with open(saved[-1]) as handle:
            state = json.load(handle)
        print(f"resumed from checkpoint {os.path.basename(saved[-1])} (epoch {state['epoch']})", flush=True)
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    rng = random.Random(42)
    w, b = float(state["w"]), float(state["b"])
    for epoch in range(int(state["epoch"]), args.epochs):
        rng.shuffle(train)
        for x, y in train:
            error = w * x + b - y
            w -= args.learning_rate * error * x / 10
            b -= args.learning_rate * error / 10
            time.sleep(args.step_seconds)
        print(f"epoch={epoch + 1} train_mse={mse(w, b, train):.5f}; validation_mse={mse(w, b, validation):.5f};",
              flush=True)
        path = os.path.join(directory, f"epoch-{epoch + 1:05d}.json")
        with open(path + ".tmp", "w") as handle:
            json.dump({"epoch": epoch + 1, "w": w, "b": b}, handle)
        os.replace(path + ".tmp", path)  # atomic: a reader (and the mirror) sees whole checkpoints only
        for old in sorted(glob.glob(os.path.join(directory, "epoch-*.json")))[:-2]:
            os.unlink(old)
        if stop:
            print(f"SIGTERM: saved epoch {epoch + 1}, stopping", file=sys.stderr, flush=True)
            return 0
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as handle:
        json.dump({"w": w, "b": b}, handle)
    with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "summary.json"), "w") as handle:
        json.dump({"epochs": args.epochs, "validation_mse": mse(w, b, validation)}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
