"""A training job that says it started, then works silently for --seconds (no output at all), then
says it is done: a busy host for the mesh's heartbeat tests."""

import argparse
import time

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=120)
args, _ = parser.parse_known_args()
print("training", flush=True)
time.sleep(args.seconds)
print("done", flush=True)
