"""Packaging model.tar.gz, and staging a File channel, for smsupervise-local.

    python -m benchmarks.artifacts [--gb 2.1] [--dir /tmp] [--sdk-python PATH]

Generates a model dir of mixed files (incompressible bytes like quantised or compressed weights,
float32-like weights whose exponent bytes repeat, and text/JSON like tokenizers and logs; many small
files and a few large ones) in a temporary directory, then packs it, in the same run, with:
smsupervise-local (``artifacts.pack``: stored, Huffman-only or deflate per 256 KiB, in threads),
``tar czf`` (gzip -6, one core), ``tar | pigz -6 -p <cores>``, and the SageMaker SDK's own
``create_tar_file`` (tarfile, gzip 9: through the SDK venv of ``make sdk`` when there is one, else
the same two calls inline). Then stages that dir as a File channel (a read-only bind mount in a
private mount namespace) against a copy. Prints a table, writes benchmarks/results/artifacts.json,
and deletes the data. Targets (issue 12): >= 1.0x pigz's throughput at a ratio no worse than 5 %
above ``gzip -6``'s; >= 4x the SDK's throughput; staging under 0.1 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, median, print_table, write_json
from smsupervise.local import artifacts

MIB = 1 << 20
OUT_PLACEHOLDER = "@OUT@"
OURS = "smsupervise-local"
GZIP = "tar czf (gzip -6)"
SDK_SNIPPET = (
    "import os, sys, time; from sagemaker.utils import create_tar_file; src, out = sys.argv[1:3]; "
    "t, c = time.perf_counter(), time.process_time(); "
    "create_tar_file([os.path.join(src, n) for n in os.listdir(src)], out); "
    "print(time.perf_counter() - t, time.process_time() - c)"
)


def _weights(size: int) -> bytes:
    """float32-like bytes: random mantissas, exponent bytes from a narrow range (as trained weights)."""
    data = bytearray(os.urandom(size))
    table = bytes((0x3C + (b & 3)) for b in range(256))
    data[3::4] = bytes(data[3::4]).translate(table)
    return bytes(data)


def _text(size: int) -> bytes:
    line = b'{"step": 12345, "loss": 0.0123456, "lr": 0.001, "token": "hello world"}\n'
    return (line * (size // len(line) + 1))[:size]


def generate(root: Path, total: int) -> int:
    """Write a mixed model dir of about ``total`` bytes; returns the bytes written."""
    kinds = [os.urandom, _weights, _text]
    written, i = 0, 0
    for small in range(2000):  # many small files: configs, tokenizer pieces, shards' indexes
        size = 4096 * (1 + small % 16)
        (root / "small" / f"{small % 20:02d}").mkdir(parents=True, exist_ok=True)
        (root / "small" / f"{small % 20:02d}" / f"f{small:05d}.bin").write_bytes(kinds[small % 3](size))
        written += size
    while written < total:  # large files in 64 MiB pieces, a third of each kind
        path = root / "large" / f"part-{i:03d}.{['bin', 'safetensors', 'jsonl'][i % 3]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            for _ in range(4):
                handle.write(kinds[i % 3](64 * MIB))
        written += 256 * MIB
        i += 1
    return written


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of a command."""
    began, cpu = time.perf_counter(), _cpu()
    subprocess.run(argv, check=True)
    return time.perf_counter() - began, _cpu() - cpu


def _ours(model: Path, out: Path) -> tuple[float, float]:
    began, cpu = time.perf_counter(), _cpu()
    artifacts.pack([str(model)], str(out))
    return time.perf_counter() - began, _cpu() - cpu


def _sdk(src: Path, out: Path, sdk_python: str | None) -> tuple[float, float]:
    if sdk_python and Path(sdk_python).exists():  # the call itself, timed inside (not the SDK's import)
        result = subprocess.run(
            [sdk_python, "-c", SDK_SNIPPET, str(src), str(out)], capture_output=True, text=True, check=True
        )
        wall, cpu = result.stdout.strip().splitlines()[-1].split()
        return float(wall), float(cpu)
    began, cpu = time.perf_counter(), time.process_time()
    with tarfile.open(out, mode="w:gz", dereference=True) as archive:  # the SDK's two calls, inline
        for name in os.listdir(src):
            archive.add(src / name, arcname=name)
    return time.perf_counter() - began, time.process_time() - cpu


def _tools(
    model: Path, work: Path, cores: int, sdk_python: str | None
) -> dict[str, Callable[[Path], tuple[float, float]]]:
    tools: dict[str, Callable[[Path], tuple[float, float]]] = {}
    tools[OURS] = lambda out: _ours(model, out)
    tools[GZIP] = lambda out: _timed(["tar", "czf", str(out), "-C", str(model), "."])
    if shutil.which("pigz"):
        pipeline = f"tar cf - -C {model} . | pigz -6 -p {cores} > {OUT_PLACEHOLDER}"
        tools[f"tar | pigz -6 -p {cores}"] = lambda out: _timed(
            ["sh", "-c", pipeline.replace(OUT_PLACEHOLDER, str(out))]
        )
    sdk = (
        "SDK create_tar_file" if sdk_python and Path(sdk_python).exists() else "SDK create_tar_file (inline)"
    )
    tools[sdk] = lambda out: _sdk(model, out, sdk_python)
    return tools


def _targets(by_tool: dict[str, dict[str, Any]]) -> list[str]:
    """Issue 12's targets, from this run's medians: >= 1.0x pigz's MB/s at a ratio no worse than
    5 % above gzip -6's, >= 4x the SDK's MB/s."""
    ours = by_tool[OURS]
    lines = [f"ratio vs gzip -6: {ours['ratio'] / by_tool[GZIP]['ratio']:.3f} (target <= 1.05)"]
    for name, row in by_tool.items():
        if name.startswith("tar | pigz"):
            lines.append(f"MB/s vs {name}: {ours['mb_per_s'] / row['mb_per_s']:.2f}x (target >= 1.0)")
        if name.startswith("SDK"):
            lines.append(f"MB/s vs {name}: {ours['mb_per_s'] / row['mb_per_s']:.2f}x (target >= 4)")
    return lines


def _staging(src: Path, work: Path) -> tuple[float, float]:
    code = (
        "import sys, time; from smsupervise.local.enter import bind; t = time.perf_counter(); "
        "bind(sys.argv[1], sys.argv[2], True); print(time.perf_counter() - t)"
    )
    bound = subprocess.run(
        ["unshare", "--mount", sys.executable, "-c", code, str(src), str(work / "view")],
        capture_output=True,
        text=True,
        check=True,
    )
    began = time.perf_counter()
    shutil.copytree(src, work / "copy")
    copy = time.perf_counter() - began
    shutil.rmtree(work / "copy")
    return float(bound.stdout.strip()), copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.1, help="model dir size in GB (default 2.1)")
    parser.add_argument("--dir", default=None, help="where the temporary data goes")
    parser.add_argument("--runs", type=int, default=3, help="rounds, interleaved (default 3)")
    default_sdk = os.environ.get("SMSUPERVISE_SDK_VENV", str(ROOT / ".venv-sdk")) + "/bin/python"
    parser.add_argument("--sdk-python", default=default_sdk)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-artifacts-") as tmp:
        work = Path(tmp)
        model = work / "model"
        size = generate(model, int(args.gb * 1e9))
        subprocess.run(["tar", "cf", "/dev/null", "-C", str(model), "."], check=True)  # warm the page cache
        tools = _tools(model, work, cores, args.sdk_python)
        walls: dict[str, list[float]] = {name: [] for name in tools}
        cpus: dict[str, list[float]] = {name: [] for name in tools}
        ratios: dict[str, float] = {}
        for run in range(args.runs):  # interleaved, rotated: load from other jobs spreads over every tool
            names = list(tools)
            for name in names[run % len(names) :] + names[: run % len(names)]:
                out = work / "archive.tar.gz"
                wall, cpu = tools[name](out)
                walls[name].append(wall)
                cpus[name].append(cpu)
                ratios[name] = out.stat().st_size / size
                out.unlink()
        rows, results = [], []
        for name in tools:
            wall, cpu = median(walls[name]), median(cpus[name])
            results.append(
                {
                    "tool": name,
                    "wall_s": walls[name],
                    "cpu_s": cpus[name],
                    "median_wall_s": round(wall, 2),
                    "mb_per_s": round(size / wall / 1e6, 1),
                    "mb_per_cpu_s": round(size / cpu / 1e6, 1),
                    "ratio": round(ratios[name], 4),
                }
            )
            rows.append(
                [
                    name,
                    f"{wall:.1f}",
                    f"{size / wall / 1e6:.1f}",
                    f"{cpu:.1f}",
                    f"{size / cpu / 1e6:.1f}",
                    f"{ratios[name]:.4f}",
                ]
            )
        print_table(
            f"Packing a {size / 1e9:.2f} GB model dir ({cores} cores, median of {args.runs})",
            ["tool", "wall s", "MB/s", "CPU s", "MB per CPU-s", "out/in"],
            rows,
        )
        targets = _targets({r["tool"]: r for r in results})
        for line in targets:
            print(line)
        bind_s, copy_s = _staging(model, work)
        print_table(
            "Staging it as a File channel",
            ["how", "s"],
            [
                ["read-only bind mount (smsupervise-local)", f"{bind_s:.4f}"],
                ["copy (shutil.copytree)", f"{copy_s:.2f}"],
            ],
        )
        write_json(
            "artifacts",
            {
                "model_bytes": size,
                "cores": cores,
                "packing": results,
                "targets": targets,
                "staging": {"bind_s": round(bind_s, 5), "copy_s": round(copy_s, 3)},
            },
        )


if __name__ == "__main__":
    main()
