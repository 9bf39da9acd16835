"""Instructions per line of the log relay's work per chunk, counted by callgrind: repeatable on a
loaded machine, where wall-clock figures are not.

    python -m benchmarks.relay_cost [REF ...] [--kinds x100,x20,dated,quoted]

For this tree and each REF (``git archive`` into a temporary directory, run from its source with
this interpreter's packages): one 64 KiB chunk of lines of a kind, handled as that version's
``ChildOutput._read_once`` handles it (frame, write to /dev/null, and where the version has them:
size the next read, add to the ``status``/``logs`` ring), 25 times under ``valgrind
--tool=callgrind`` minus 5 times (start-up), divided by the lines. Kinds: ``x100``/``x20`` plain
lines of 100/20 bytes, ``dated`` a level on every line, ``quoted`` a quote on every line. Needs
valgrind. benchmarks/README.md has the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, print_table

KINDS = {
    "x100": b"x" * 99 + b"\n",
    "x20": b"x" * 19 + b"\n",
    "dated": b"2026-12-07 21:00:00,123 INFO train step 100 loss=0.123 lr=0.001 it/s=12.5 more words here\n",
    "quoted": b'step 100 {"loss": 0.123, "lr": 0.001} said "ok" and more words to make it long enough\n',
}


def work(kind: str, chunks: int) -> None:
    """In the worker: ``chunks`` times the relay's work on one chunk, with the version on sys.path."""
    import asyncio

    data = KINDS[kind] * (65536 // len(KINDS[kind]))
    loop = asyncio.new_event_loop()
    fd = os.open(os.devnull, os.O_WRONLY)
    try:  # the version's layout: streams/ (since the debug socket) or flat modules (before)
        from smsupervise.linux import libc
        from smsupervise.streams import childpipes, framing, recent, writer
    except ImportError:
        from smsupervise import libc  # type: ignore[no-redef]
        from smsupervise import logstream as framing  # type: ignore[no-redef]
        from smsupervise import output as writer  # type: ignore[no-redef]

        childpipes = recent = None  # type: ignore[assignment]
    libc.keep_heap()
    counter = framing.SeqCounter() if hasattr(framing, "SeqCounter") else framing.Counter()
    framer = framing.StreamFramer("stdout", framing.RecordFormat(pid=1234), counter)
    out = writer.Output(loop, fd)
    ring = recent.Recent() if recent is not None else None
    counts = ring is not None and "records" in ring.add.__code__.co_varnames
    for index in range(chunks):
        now = 1_765_000_000.0 + index * 0.0013
        if ring is None:
            out.write(framer.feed(data, now))
            continue
        if counts:  # the framer's seq says how many records (this branch)
            before = counter.value
            rendered = framer.feed(data, now)
            records = counter.value - before
            childpipes.read_size_for(len(data), records)
            out.write(rendered, "stdout")
            ring.add("stdout", rendered, records)
        else:  # newlines counted in the input and in the ring (944774a)
            childpipes.read_size_for(len(data), data.count(b"\n"))
            rendered = framer.feed(data, now)
            out.write(rendered, "stdout")
            ring.add("stdout", rendered)


def _instructions(source: Path, kind: str, chunks: int) -> int:
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{ROOT}"}
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    argv += ["-m", "benchmarks.relay_cost", "--worker", kind, "--chunks", str(chunks)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no count from callgrind: {done.stderr[-500:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="*", metavar="REF")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--chunks", type=int, default=25, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work(args.worker, args.chunks)
        return 0
    if shutil.which("valgrind") is None:
        print("note: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 0
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory(prefix="smsupervise-relay-cost-") as tmp:
        sources = {"tree": ROOT / "supervisor"}
        for ref in args.refs:
            dest = Path(tmp) / ref
            dest.mkdir(parents=True)
            archive = subprocess.run(
                ["git", "archive", ref], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
            sources[ref] = dest / "supervisor"
        rows = []
        for kind in kinds:
            lines = 65536 // len(KINDS[kind])
            row = [kind]
            for source in sources.values():
                many, few = _instructions(source, kind, 25), _instructions(source, kind, 5)
                row.append(f"{(many - few) / 20 / lines:,.0f}")
            rows.append(row)
    print_table("instructions per line (callgrind)", ["lines", *sources], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
