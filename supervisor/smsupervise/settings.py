"""Every knob in one table: flag ``--grace-period`` <-> env ``SMSUPERVISE_GRACE_PERIOD`` <-> default.

``cli`` parses the command line against ``OPTIONS``; ``Settings.from_sources`` merges flags over
environment variables over defaults, and checks what spans several fields.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

from smsupervise.errors import UsageError

ForwardTo = Literal["group", "child"]
LogFormat = Literal["json", "text", "raw"]
LogLevel = Literal["debug", "info", "warning", "error"]
Mode = Literal["train", "serve", "exec"]

ENV_PREFIX = "SMSUPERVISE_"
STOP_MARGIN = 5.0  # seconds kept free in the stop budget for SIGKILL, reaping and flushing


def _seconds(value: str, source: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"{source}: {value!r} is not a number of seconds; use e.g. 30 or 2.5") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"{source}: {value!r} must be a finite number of seconds >= 0")
    return seconds


def _size(value: str, source: str) -> int:
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in units else ""
    number = text[: len(text) - len(unit)]
    try:
        size = int(float(number) * units[unit])
    except ValueError:
        raise UsageError(
            f"{source}: {value!r} is not a size; use bytes or a suffix, e.g. 16384, 64K, 1M"
        ) from None
    if size <= 0:
        raise UsageError(f"{source}: {value!r} must be a positive size")
    return size


def _signal(value: str, source: str) -> int:
    text = value.strip().upper()
    if text.isdigit():
        number = int(text)
    else:
        name = text if text.startswith("SIG") else f"SIG{text}"
        try:
            number = int(signal.Signals[name])
        except KeyError:
            raise UsageError(f"{source}: {value!r} is not a signal name; use e.g. USR1 or SIGUSR2") from None
    if number in (signal.SIGKILL, signal.SIGSTOP) or number not in signal.valid_signals():
        raise UsageError(f"{source}: {value!r} cannot be caught by a program; use e.g. USR1")
    return number


def _boolean(value: str, source: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"{source}: {value!r} is not a boolean; use 1 or 0")


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(value: str, source: str) -> str:
        if value not in choices:
            raise UsageError(f"{source}: {value!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _text(value: str, source: str) -> str:
    if not value.strip():
        raise UsageError(f"{source}: must not be empty")
    return value


class Option(NamedTuple):
    """One knob: its flag, its environment variable, how to parse it, and its help text."""

    name: str
    metavar: str | None  # None: a flag that takes no value
    parse: Callable[[str, str], object]
    default: str
    help: str
    env_name: str | None = None  # when the variable is not SMSUPERVISE_<OPTION>

    @property
    def env(self) -> str:
        return self.env_name or ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def field(self) -> str:
        return self.name.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option(
        "base-dir",
        "DIR",
        _text,
        "/opt/ml",
        "SageMaker's base directory (config, data, code, model, output)",
        "SAGEMAKER_BASE_DIR",
    ),
    Option(
        "forward-to",
        "group|child",
        _choice("group", "child"),
        "group",
        "send forwarded signals to the child's whole process group, or to the child only",
    ),
    Option(
        "grace-period",
        "SECONDS",
        _seconds,
        "100 (serve: 20), less when it must fit --stop-budget",
        "after SIGTERM/SIGINT reaches the child's group, wait this long before SIGKILLing it",
    ),
    Option(
        "checkpoint-hook",
        "CMD",
        _text,
        "none",
        "on a stop, run this command line (no shell; use sh -c '...' for one) while training keeps "
        "running, then go on to SIGTERM; it gets SMSUPERVISE_STOP_REASON and SMSUPERVISE_DEADLINE",
    ),
    Option(
        "checkpoint-signal",
        "SIG",
        _signal,
        "none",
        "on a stop, send this signal (e.g. USR1) to the training process group first; it saves and "
        "creates the file named in its SMSUPERVISE_CHECKPOINT_DONE, then smsupervise goes on",
    ),
    Option(
        "checkpoint-timeout",
        "SECONDS",
        _seconds,
        "60 (serve: 10)",
        "the longest the checkpoint step may take; a hook still running then is SIGKILLed",
    ),
    Option(
        "stop-budget",
        "SECONDS",
        _seconds,
        "120 (serve: 30)",
        "the whole stop must fit this (SageMaker SIGKILLs everything 120 s after SIGTERM; "
        "endpoints 30 s): checkpoint timeout + grace + leftover grace + 5 s must not exceed it",
    ),
    Option(
        "max-runtime",
        "SECONDS",
        _seconds,
        "none",
        "stop the job this long after it started, as SIGTERM would, with reason MaxRuntimeExceeded "
        "(0: no limit)",
    ),
    Option(
        "leftover-grace",
        "SECONDS",
        _seconds,
        "5",
        "after the main child exits, wait this long for the rest to end after SIGTERM, then SIGKILL",
    ),
    Option(
        "log-format",
        "json|text|raw",
        _choice("json", "text", "raw"),
        "json",
        "json: one JSON object per line; text: for people; raw: child output passed through untouched",
    ),
    Option(
        "merge-streams",
        None,
        _boolean,
        "off",
        "write the child's stderr records to our stdout too (one stream, in read order)",
    ),
    Option(
        "max-line-bytes",
        "BYTES",
        _size,
        "16384",
        "no output line is longer (SageMaker's shipper splits at 16 KiB); longer messages are "
        "split into parts marked `partial` (1024 to 1048550)",
    ),
    Option(
        "progress-interval",
        "SECONDS",
        _seconds,
        "10",
        "emit at most one `\\r` progress state (tqdm) per stream per interval; the last one before "
        "a newline is always kept",
    ),
    Option(
        "flush-after",
        "SECONDS",
        _seconds,
        "1",
        "emit a line that has no newline yet after this much silence (marked `eol: none`)",
    ),
    Option(
        "drain-timeout",
        "SECONDS",
        _seconds,
        "2",
        "after the main child exits, read its output until EOF for at most this long",
    ),
    Option(
        "pipe-relay",
        None,
        _boolean,
        "off",
        "relay Pipe-mode channels through smsupervise's zero-copy splice relay, with read-ahead: "
        "SM_CHANNEL_<CH> then points at the relay's FIFOs",
    ),
    Option(
        "pipe-buffer",
        "BYTES",
        _size,
        "64M",
        "read-ahead per Pipe channel (a ring of 1 MiB pipes), so the stream keeps flowing while "
        "the trainer computes",
    ),
    Option(
        "pipe-relay-dir",
        "DIR",
        _text,
        "a new directory under $TMPDIR",
        "where the relay's FIFOs <channel>_<N> go (also SMSUPERVISE_PIPE_DIR in the job)",
    ),
    Option(
        "log-level",
        "debug|info|warning|error",
        _choice("debug", "info", "warning", "error"),
        "info",
        "the least severe of smsupervise's own events that is written",
    ),
)
OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


class Settings(NamedTuple):
    """The resolved configuration. Built once, before anything runs; never mutated."""

    base_dir: str | None = None  # None: SAGEMAKER_BASE_DIR, else /opt/ml
    forward_to: ForwardTo = "group"
    grace_period: float = 100.0
    checkpoint_hook: str | None = None
    checkpoint_signal: int | None = None
    checkpoint_timeout: float = 60.0
    stop_budget: float = 120.0
    max_runtime: float | None = None
    leftover_grace: float = 5.0
    log_format: LogFormat = "json"
    log_level: LogLevel = "info"
    merge_streams: bool = False
    max_line_bytes: int = 16384
    progress_interval: float = 10.0
    flush_after: float = 1.0
    drain_timeout: float = 2.0
    pipe_relay: bool = False
    pipe_buffer: int = 64 << 20
    pipe_relay_dir: str | None = None

    @classmethod
    def from_sources(cls, flags: Mapping[str, object], env: Mapping[str, str], mode: Mode) -> Settings:
        """Flags win over ``SMSUPERVISE_*`` variables, which win over the defaults for ``mode``."""
        values: dict[str, object] = {}
        for option in OPTIONS:
            if option.field in flags:
                values[option.field] = flags[option.field]
            elif option.env in env:
                values[option.field] = option.parse(env[option.env], f"environment variable {option.env}")
        _stop_defaults(values, mode)
        line_bytes = values.get("max_line_bytes", 16384)
        if not isinstance(line_bytes, int) or not 1024 <= line_bytes <= 1048550:
            raise UsageError(
                f"--max-line-bytes / {ENV_PREFIX}MAX_LINE_BYTES: {line_bytes} is out of range; "
                "use 1024 to 1048550 (CloudWatch's event limit is 1 MiB - 26 bytes)"
            )
        known = set(cls._fields)
        return cls(**{k: v for k, v in values.items() if k in known})  # type: ignore[arg-type]

    @property
    def checkpointing(self) -> bool:
        return self.checkpoint_hook is not None or self.checkpoint_signal is not None


def _stop_defaults(values: dict[str, object], mode: Mode) -> None:
    """Fill in the stop sequence's defaults for ``mode`` and check that the whole stop fits the
    budget: checkpoint timeout (when there is a checkpoint step) + grace + leftover grace + margin.

    SageMaker SIGKILLs a training container 120 s after SIGTERM and an endpoint 30 s after; a stop
    that cannot finish inside that loses the checkpoint it was for, so it is refused at start.
    """
    serve = mode == "serve"
    budget = float(values.setdefault("stop_budget", 30.0 if serve else 120.0))  # type: ignore[arg-type]
    timeout = float(values.setdefault("checkpoint_timeout", 10.0 if serve else 60.0))  # type: ignore[arg-type]
    if values.get("max_runtime") == 0:
        values["max_runtime"] = None
    checkpointing = values.get("checkpoint_hook") is not None or values.get("checkpoint_signal") is not None
    leftover = float(values.get("leftover_grace", 5.0))  # type: ignore[arg-type]
    before_grace = (timeout if checkpointing else 0.0) + leftover + STOP_MARGIN
    if "grace_period" not in values:
        values["grace_period"] = min(20.0 if serve else 100.0, budget - before_grace)
    grace = float(values["grace_period"])  # type: ignore[arg-type]
    if grace < 0 or before_grace + grace > budget:
        parts = [f"--grace-period {grace:g}", f"--leftover-grace {leftover:g}", f"{STOP_MARGIN:g} s margin"]
        if checkpointing:
            parts.insert(0, f"--checkpoint-timeout {timeout:g}")
        raise UsageError(
            f"the stop sequence cannot fit --stop-budget {budget:g} s ({ENV_PREFIX}STOP_BUDGET): "
            f"{' + '.join(parts)} = {before_grace + max(grace, 0):g} s. Lower --grace-period"
            f"{' or --checkpoint-timeout' if checkpointing else ''} (or their {ENV_PREFIX}* variables), or "
            "raise --stop-budget if your platform waits longer before SIGKILL (SageMaker: 120 s for "
            "training, 30 s for endpoints)"
        )
