"""Baseline relay for benchmarks/logs.py: asyncio readline() + json.dumps per line (the shape most
Python log shippers have). Prints its own CPU seconds to stderr at the end."""

import asyncio
import json
import os
import sys
import time


async def main() -> None:
    proc = await asyncio.create_subprocess_exec(*sys.argv[1:], stdout=asyncio.subprocess.PIPE, limit=1 << 20)
    assert proc.stdout is not None
    out = sys.stdout.buffer
    seq = 0
    while line := await proc.stdout.readline():
        seq += 1
        record = {
            "ts": time.time(),
            "stream": "stdout",
            "msg": line.rstrip(b"\n").decode("utf-8", "replace"),
            "seq": seq,
            "pid": proc.pid,
        }
        out.write(json.dumps(record).encode() + b"\n")
    await proc.wait()
    out.flush()
    times = os.times()
    sys.stderr.write(f"cpu_s={times.user + times.system:.4f}\n")


asyncio.run(main())
