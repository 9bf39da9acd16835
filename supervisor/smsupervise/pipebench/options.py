"""The command line of ``smsupervise-pipe-bench``, as one frozen ``BenchOptions``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from smsupervise.pipemode.emulate import parse_rate

Output = Literal["table", "json", "csv"]

DESCRIPTION = """\
Run your reader (CMD) as a supervised SageMaker Pipe-mode job fed from local data, at each platform
rate given, and report what it got: MB/s delivered, time to first byte, input-starved vs
trainer-bound time, the reader's CPU, and a verdict. `cat` is run in the same run as the ceiling.
CMD gets SM_CHANNEL_<NAME> (open f"{SM_CHANNEL_<NAME>}_{epoch}" for epoch 0, 1, ...),
SMSUPERVISE_PIPE_DIR (with --relay) and SM_HP_EPOCHS, as in a Pipe-mode training job.
"""

EPILOG = """\
example: smsupervise-pipe-bench --channel train=./data --recordio --epochs 2 \\
    --rate 50,200,unlimited -- python3 examples/pipe-reader/reader.py
exit status: 0 done; 1 the reader failed, exited early or timed out; 2 bad options.
"""


@dataclass(frozen=True)
class Channel:
    """One channel and its local data: a file, or a directory of objects."""

    name: str
    path: str


@dataclass(frozen=True)
class BenchOptions:
    """Everything a bench run needs, checked."""

    command: tuple[str, ...]
    channels: tuple[Channel, ...]
    rates: tuple[float | None, ...]  # MB/s per channel, None: unlimited; in the order given
    epochs: int = 1
    recordio: bool = False
    gzip: bool = False
    relay: bool = True
    ceiling: bool = True  # run `cat` at unlimited rate as the ceiling
    output: Output = "table"
    png: str | None = None
    timeout: float = 600.0  # per run


class BenchUsageError(Exception):
    """Bad options: the message names the option and the fix."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smsupervise-pipe-bench",
        usage="smsupervise-pipe-bench [OPTIONS] -- CMD [ARGS...]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--channel",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a Pipe channel and its data: a file, or a directory of objects (repeatable)",
    )
    add("--epochs", type=int, default=1, help="epochs per channel (default 1); CMD must read them all")
    add("--recordio", action="store_true", help="wrap each object in a RecordIO record")
    add("--gzip", action="store_true", help="the objects are gzip files: decompress them on the way")
    add(
        "--rate",
        default="unlimited",
        metavar="MB/S[,MB/S...]",
        help="the platform's throughput per channel in MB/s, or 'unlimited'; a comma list sweeps it "
        "(default unlimited)",
    )
    add(
        "--relay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="through smsupervise's Pipe relay and its read-ahead ring (default), or straight from "
        "the platform's FIFOs",
    )
    add(
        "--ceiling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run `cat` as the reader at unlimited rate, the ceiling to compare with (default)",
    )
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON (schema smsupervise-pipe-bench/1)")
    formats.add_argument("--csv", action="store_true", help="print CSV, one row per run, channel and epoch")
    add("--png", metavar="PATH", help="also draw the charts into PATH (needs smsupervise[plot])")
    add("--timeout", type=float, default=600.0, metavar="SECONDS", help="the longest one run may take")
    add("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]: your reader or training step")
    return parser


def _channels(items: Sequence[str]) -> tuple[Channel, ...]:
    if not items:
        raise BenchUsageError("no channel: give --channel NAME=PATH, e.g. --channel train=./data/train")
    channels: list[Channel] = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise BenchUsageError(f"--channel {item!r}: use NAME=PATH, e.g. --channel train=./data/train")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise BenchUsageError(f"--channel {item!r}: a channel name is letters, digits, '-' and '_'")
        if any(channel.name == name for channel in channels):
            raise BenchUsageError(f"--channel {item!r}: channel {name!r} is given twice")
        if not os.path.exists(path):
            raise BenchUsageError(f"--channel {item!r}: {path}: no such file or directory")
        if os.path.isdir(path) and not any(files for _, _, files in os.walk(path)):
            raise BenchUsageError(f"--channel {item!r}: {path} holds no files to stream")
        channels.append(Channel(name, os.path.abspath(path)))
    return tuple(channels)


def _rates(text: str) -> tuple[float | None, ...]:
    rates: list[float | None] = []
    for word in text.split(","):
        try:
            rates.append(parse_rate(word))
        except ValueError as error:
            raise BenchUsageError(f"--rate {error}") from None
    return tuple(rates)


def parse(argv: Sequence[str]) -> BenchOptions:
    """argv (without the program name) to ``BenchOptions``; raises ``BenchUsageError``."""
    parser = _parser()
    args = parser.parse_args(argv)
    command = tuple(args.command[1:] if args.command[:1] == ["--"] else args.command)
    if not command:
        raise BenchUsageError("no reader to run: end the options with -- CMD [ARGS...]")
    if args.epochs < 1:
        raise BenchUsageError("--epochs must be at least 1")
    if not args.timeout > 0:
        raise BenchUsageError("--timeout must be above 0 seconds")
    output: Output = "json" if args.json else "csv" if args.csv else "table"
    return BenchOptions(
        command=command,
        channels=_channels(args.channel),
        rates=_rates(args.rate),
        epochs=args.epochs,
        recordio=args.recordio,
        gzip=args.gzip,
        relay=args.relay,
        ceiling=args.ceiling,
        output=output,
        png=args.png,
        timeout=args.timeout,
    )


def parser_error(message: str) -> str:
    """The message for a usage error, in argparse's shape."""
    return f"{_parser().format_usage()}smsupervise-pipe-bench: error: {message}\n"
