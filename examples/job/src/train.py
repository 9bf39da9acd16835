"""The bundled example training job: linear regression by mini-batch SGD, standard library only.

Run by `make demo` in script mode, as SageMaker's training toolkit would run it:
``python3 -- train.py --batch_size 32 --epochs 8 --learning-rate 0.05 --optimizer sgd``, from
``/opt/ml/code``, with ``SM_CHANNEL_TRAIN``, ``SM_MODEL_DIR`` and friends set.

What it shows:
- hyperparameters arrive as arguments, channels as directories;
- logging records (their level is detected), a tqdm-style ``\\r`` progress bar, and a JSON metrics line
  (emitted at the root of smsupervise's output, so CloudWatch Logs Insights sees its fields);
- numbered checkpoints written atomically (write a temporary file, then rename), and resuming from
  the newest one; on SIGTERM, or when smsupervise asks through the checkpoint protocol, it saves
  one more checkpoint before it stops;
- ``--fail-at-epoch N`` raises an exception, to show the failure file smsupervise writes.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import os
import random
import signal
import sys
import time

log = logging.getLogger("train")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd"])
    parser.add_argument("--fail-at-epoch", type=int, default=-1)
    parser.add_argument("--step-seconds", type=float, default=0.0, help="slow each batch down (demos)")
    return parser.parse_args(argv)


def read_points(channel_dir: str) -> list[tuple[float, float]]:
    points = []
    for path in sorted(glob.glob(os.path.join(channel_dir, "*.csv"))):
        with open(path) as handle:
            next(handle)  # header
            for line in handle:
                x, y = line.split(",")
                points.append((float(x), float(y)))
    if not points:
        raise FileNotFoundError(f"no *.csv data in channel directory {channel_dir}")
    return points


def mse(w: float, b: float, points: list[tuple[float, float]]) -> float:
    return sum((w * x + b - y) ** 2 for x, y in points) / len(points)


class Checkpoints:
    """Numbered checkpoints ``ckpt-00003.json``; each carries a digest of its own state."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def save(self, state: dict[str, object]) -> str:
        body = json.dumps(state, sort_keys=True)
        record = json.dumps({"state": state, "sha256": hashlib.sha256(body.encode()).hexdigest()})
        final = os.path.join(self.directory, f"ckpt-{state['epoch']:05d}-{state['step']:07d}.json")
        temporary = final + ".tmp"
        with open(temporary, "w") as handle:
            handle.write(record)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)  # atomic: a reader sees the old set or the new file, whole
        return final

    def newest(self) -> dict[str, object] | None:
        names = sorted(glob.glob(os.path.join(self.directory, "ckpt-*.json")))
        if not names:
            return None
        with open(names[-1]) as handle:
            record = json.load(handle)
        state = record["state"]
        if hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest() != record["sha256"]:
            raise ValueError(f"checkpoint {names[-1]} is corrupt")
        return dict(state)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(sys.argv[1:])
    train = read_points(os.environ["SM_CHANNEL_TRAIN"])
    validation = read_points(os.environ["SM_CHANNEL_VALIDATION"])
    checkpoints = Checkpoints(os.environ.get("SMSUPERVISE_CHECKPOINT_DIR", "/opt/ml/checkpoints"))

    state: dict[str, object] = {"epoch": 0, "step": 0, "w": 0.0, "b": 0.0, "losses": []}
    resumed = checkpoints.newest()
    if resumed is not None:
        state = resumed
        log.info("resumed from checkpoint: epoch %s step %s", state["epoch"], state["step"])

    stop = {"requested": False}

    def on_stop(signum: int, _frame: object) -> None:
        stop["requested"] = True  # finish the current batch, save, exit: see the loop below

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR1, on_stop)

    log.info("training on %d points (%d validation), hosts %s", len(train), len(validation),
             os.environ.get("SM_HOSTS"))
    rng = random.Random(42)
    w, b = float(state["w"]), float(state["b"])  # type: ignore[arg-type]
    losses = list(state["losses"])  # type: ignore[call-overload]
    first_epoch, skip = int(state["epoch"]), int(state["step"])  # type: ignore[call-overload]
    for epoch in range(first_epoch, args.epochs):
        if epoch == args.fail_at_epoch:
            raise RuntimeError(f"loss diverged at epoch {epoch} (--fail-at-epoch {args.fail_at_epoch})")
        order = list(range(len(train)))
        random.Random(epoch).shuffle(order)  # the same order on a resumed run
        batches = range(0, len(order), args.batch_size)
        for number, start in enumerate(batches, 1):
            if epoch == first_epoch and number <= skip:
                continue  # done before the checkpoint we resumed from
            batch = [train[i] for i in order[start:start + args.batch_size]]
            gw = sum(2 * (w * x + b - y) * x for x, y in batch) / len(batch)
            gb = sum(2 * (w * x + b - y) for x, y in batch) / len(batch)
            w -= args.learning_rate * gw
            b -= args.learning_rate * gb
            sys.stdout.write(f"\repoch {epoch}: {number}/{len(batches)} batches")
            sys.stdout.flush()
            if args.step_seconds:
                time.sleep(args.step_seconds * rng.uniform(0.5, 1.5))
            if stop["requested"]:
                sys.stdout.write("\n")
                saved = checkpoints.save({"epoch": epoch, "step": number, "w": w, "b": b, "losses": losses})
                log.warning("stop requested: saved %s, exiting", os.path.basename(saved))
                done = os.environ.get("SMSUPERVISE_CHECKPOINT_DONE")
                if done:
                    open(done, "w").close()  # tell smsupervise the checkpoint is complete
                return 0
        sys.stdout.write("\n")
        loss = mse(w, b, validation)
        losses.append(round(loss, 6))
        print(json.dumps({"metric": "validation:mse", "epoch": epoch, "value": round(loss, 6)}), flush=True)
        log.info("epoch %d done: validation mse %.5f, w=%.4f b=%.4f", epoch, loss, w, b)
        checkpoints.save({"epoch": epoch + 1, "step": 0, "w": w, "b": b, "losses": losses})
    model_dir = os.environ["SM_MODEL_DIR"]
    with open(os.path.join(model_dir, "model.json"), "w") as handle:
        json.dump({"w": w, "b": b, "validation_mse": losses[-1], "losses": losses}, handle)
    log.info("model saved to %s", model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
