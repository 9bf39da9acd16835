"""A Pipe-mode job: reads ``$SM_CHANNEL_TRAIN_<N>`` for N epochs and writes what it read to the model dir.

Usage: pipe_reader.py EPOCHS. Writes ``$SM_MODEL_DIR/pipe.json``: per epoch the byte count and the
sha256 of the bytes, so the host can compare them with what it streamed.
"""

import hashlib
import json
import os
import sys
import time

channel = os.environ["SM_CHANNEL_TRAIN"]
epochs = []
for epoch in range(int(sys.argv[1])):
    path = f"{channel}_{epoch}"
    end = time.monotonic() + 60
    while not os.path.exists(path):  # the FIFO appears when the relay is ready for this epoch
        if time.monotonic() > end:
            sys.exit(f"{path} did not appear within 60 s")
        time.sleep(0.01)
    digest, count = hashlib.sha256(), 0
    with open(path, "rb") as fifo:
        while chunk := fifo.read(1 << 20):
            digest.update(chunk)
            count += len(chunk)
    epochs.append({"bytes": count, "sha256": digest.hexdigest()})
    print(json.dumps({"epoch": epoch, **epochs[-1]}), flush=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "pipe.json"), "w") as handle:
    json.dump(epochs, handle)
