"""Example data for reader.py: a directory of objects, one float32 sample each.

    python3 make_data.py DIR [--objects 2048] [--features 4096] [--gzip]

Each object is ``<label: int32><features: float32 * n>`` (16 KiB with the defaults, 32 MiB in all);
stream the directory with ``--recordio`` and each object becomes one RecordIO record. ``--gzip``
writes gzip objects (stream them with ``--gzip``).
"""

from __future__ import annotations

import argparse
import array
import gzip
import os
import random


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--objects", type=int, default=2048)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)  # noqa: S311 - example data, reproducible
    os.makedirs(args.dir, exist_ok=True)
    for index in range(args.objects):
        label = array.array("i", [rng.randrange(10)]).tobytes()
        features = array.array("f", (rng.random() for _ in range(args.features))).tobytes()
        data = label + features
        name = os.path.join(args.dir, f"part-{index:05d}.bin" + (".gz" if args.gzip else ""))
        with open(name, "wb") as handle:
            handle.write(gzip.compress(data, 1) if args.gzip else data)


if __name__ == "__main__":
    main()
