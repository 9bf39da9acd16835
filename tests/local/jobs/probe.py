"""The test job for tests/local: run in script mode by ``smsupervise train``; ``--mode`` says what it does.

channels: fingerprints every channel (File/FastFile: each file's sha256 by path; Pipe: the sha256 of
epochs 0 and 1 of ``<ch>_N``), whether writing into it fails, and its mount options;
hosts: what this host sees (SM_CURRENT_HOST, hostname, addresses of every algo-*, its shard);
steps: a checkpointing loop (resumes from the newest checkpoint, saves and exits 0 on SIGTERM);
fail: raises after a line on stderr; metrics: metric lines on both streams; wait: "ready", then
waits for SIGTERM (``--ignore-term 1``: ignores it, so only SIGKILL ends it).
"""

import argparse
import glob
import hashlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path


def out(name, value):
    with open(
        os.path.join(os.environ["SM_MODEL_DIR"], f"{name}-{os.environ['SM_CURRENT_HOST']}.json"), "w"
    ) as f:
        json.dump(value, f)


def _mountinfo(path):
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as handle:
        lines = handle.read().splitlines()
    found = None
    for line in lines:
        fields = line.split()
        if fields[4] == real:
            found = fields  # the last mount on a path is the one seen
    return found


def mount_options(path):
    fields = _mountinfo(path)
    return fields[5] if fields else None


def fstype(path):
    fields = _mountinfo(path)
    return fields[fields.index("-") + 1] if fields else None


def _try(action):
    try:
        action()
    except OSError as error:
        return error.strerror
    return None


def _append(path):
    with open(path, "ab") as handle:
        handle.write(b"appended by the job")


def fingerprint(path, writes=False):
    if not os.path.isdir(path):
        return None
    files = {}
    for root, _dirs, names in os.walk(path, followlinks=True):
        for name in names:
            full = os.path.join(root, name)
            files[os.path.relpath(full, path)] = hashlib.sha256(Path(full).read_bytes()).hexdigest()
    write_error = _try(lambda: open(os.path.join(path, "written-by-the-job"), "w").close())
    seen = {"files": files, "write_error": write_error, "mount": mount_options(path), "fstype": fstype(path)}
    if writes and files:  # what ModelTrainer does to a channel's file (chmod +x), and a write into one
        first = os.path.join(path, sorted(files)[0])
        seen["chmod_error"] = _try(lambda: os.chmod(first, os.stat(first).st_mode | 0o111))  # noqa: S103 (chmod +x, as ModelTrainer)
        seen["append_error"] = _try(lambda: _append(first))
        last = os.path.join(path, sorted(files)[-1])
        seen["remove_error"] = _try(lambda: os.unlink(last))
        seen["mkdir_error"] = _try(lambda: os.makedirs(os.path.join(path, "made-by-the-job", "deeper")))
    return seen


def channels(args):
    config = json.loads(os.environ["SM_INPUT_DATA_CONFIG"])
    seen = {"input_data_config": config}
    for name in json.loads(os.environ["SM_CHANNELS"]):
        path = os.environ[f"SM_CHANNEL_{name.upper()}"]
        if config[name]["TrainingInputMode"] == "Pipe":
            epochs = []
            for epoch in range(args.epochs):
                fifo = f"{path}_{epoch}"
                deadline = time.monotonic() + 30
                while not os.path.exists(fifo) and time.monotonic() < deadline:
                    time.sleep(0.01)
                with open(fifo, "rb") as f:
                    data = f.read()
                epochs.append({"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
            seen[name] = {"epochs": epochs}
        else:
            seen[name] = fingerprint(path, writes=True)
    out("channels", seen)


def resolve(name):
    try:
        return socket.gethostbyname(name)
    except OSError:
        return None


def hosts(args):
    others = json.loads(os.environ["SM_HOSTS"])
    out(
        "hosts",
        {
            "current_host": os.environ["SM_CURRENT_HOST"],
            "hostname": socket.gethostname(),
            "addresses": {h: resolve(h) for h in others},
            "eth0": os.path.exists("/sys/class/net/eth0"),
            "pid": os.getppid(),
            "shard": sorted(fingerprint(os.environ["SM_CHANNEL_SHARDED"])["files"])
            if "SM_CHANNEL_SHARDED" in os.environ
            else None,
            "base": os.environ["SM_MODEL_DIR"],
        },
    )


def steps(args):
    directory = os.environ["SMSUPERVISE_CHECKPOINT_DIR"]
    os.makedirs(directory, exist_ok=True)
    found = sorted(glob.glob(os.path.join(directory, "step-*.json")))
    start = json.loads(Path(found[-1]).read_text())["step"] + 1 if found else 0
    print(f"resumed from {start}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def save(step):
        tmp = os.path.join(directory, f"step-{step:06d}.json.tmp")
        Path(tmp).write_text(json.dumps({"step": step}))
        os.replace(tmp, tmp[: -len(".tmp")])
        for old in sorted(glob.glob(os.path.join(directory, "step-*.json")))[:-2]:
            os.unlink(old)  # keep the last two: deletions must be mirrored too

    for step in range(start, args.steps):
        if stop:
            print(f"stopping at step {step}", flush=True)
            return
        time.sleep(args.step_seconds)
        save(step)
        print(f"step {step} loss={1.0 / (step + 1):.6f};", flush=True)
    out("done", {"first_step": start, "last_step": args.steps - 1})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-seconds", type=float, default=0.0)
    parser.add_argument("--ignore-term", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "channels":
        channels(args)
    elif args.mode == "hosts":
        hosts(args)
    elif args.mode == "steps":
        steps(args)
    elif args.mode == "fail":
        print("about to fail", file=sys.stderr, flush=True)
        raise RuntimeError("the probe failed on purpose at step 3")
    elif args.mode == "metrics":
        print("epoch=1 train_loss=0.75;", flush=True)
        print("epoch=1 validation:accuracy=0.5", file=sys.stderr, flush=True)
        print("epoch=2 train_loss=0.25;", flush=True)
        print("epoch=2 validation:accuracy=0.875", file=sys.stderr, flush=True)
        print("train_loss=not-a-number;", flush=True)
    elif args.mode == "wait":
        if args.ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        while True:
            signal.pause()
    os.makedirs(os.environ["SM_OUTPUT_DATA_DIR"], exist_ok=True)
    with open(
        os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], f"out-{os.environ['SM_CURRENT_HOST']}.txt"), "w"
    ) as f:
        f.write("output data\n")


if __name__ == "__main__":
    main()
