"""One supervised run: the platform's side and ``smsupervise [--pipe-relay] train``, the reader as the job.

Both are real subprocesses of this (separate) console script: ``smsupervise-pipe-emulate`` streams
the channels into ``<base>/input/data/<ch>_<N>`` at the rate asked for, and smsupervise runs the
reader as its training job (``SMSUPERVISE_TRAIN``), so the reader is supervised exactly as in a
Pipe-mode job and gets that job's environment. The reader's CPU is smsupervise's children's time:
``wait4`` gives smsupervise's own time plus that of everything it reaped, and its ``exiting`` event
gives its own.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, Literal

import orjson

from smsupervise.pipebench.options import BenchOptions
from smsupervise.pipebench.results import RunResult, epochs_from_events

POLL = 0.02  # how often the harness looks at its processes
SETTLE = 5.0  # after the reader is done, how long the platform's side may take to finish
GRACE = "5"  # smsupervise's grace period when the harness stops a run (timeout, Ctrl-C)
TAIL = 12  # lines of the reader's output kept for an error message
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class RunSpec:
    """Which reader, at which rate."""

    reader: Literal["reader", "cat"]
    command: tuple[str, ...]
    rate: float | None  # MB/s, None: unlimited


class _Collector(threading.Thread):
    """Reads one of a process's pipes to EOF: JSON events kept, the job's other lines' last few."""

    def __init__(self, stream: IO[bytes], keep: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.keep = keep
        self.events: list[dict[str, Any]] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL)

    def run(self) -> None:
        for line in self.stream:
            record: object = None
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
            if isinstance(record, dict) and self.keep(record):
                self.events.append(record)
            elif isinstance(record, dict) and "msg" in record:
                self.tail.append(str(record["msg"]))
            else:
                self.tail.append(line.decode(errors="replace").rstrip("\n"))


def _tree(workdir: str, options: BenchOptions) -> str:
    """The /opt/ml tree of a Pipe-mode job: every channel in Pipe mode, epochs as a hyperparameter."""
    base = os.path.join(workdir, "ml")
    for part in ("input/config", "input/data", "output", "model"):
        os.makedirs(os.path.join(base, part), exist_ok=True)
    channel: dict[str, str] = {"TrainingInputMode": "Pipe"}
    if options.recordio:
        channel["RecordWrapperType"] = "RecordIO"
    if options.gzip:
        channel["CompressionType"] = "Gzip"
    config = {c.name: channel for c in options.channels}
    with open(os.path.join(base, "input/config/inputdataconfig.json"), "wb") as handle:
        handle.write(orjson.dumps(config))
    with open(os.path.join(base, "input/config/hyperparameters.json"), "wb") as handle:
        handle.write(orjson.dumps({"epochs": str(options.epochs)}))
    return base


def _emulator_argv(base: str, options: BenchOptions, rate: float | None) -> list[str]:
    argv = [sys.executable, "-m", "smsupervise.pipemode.emulate", "--data-dir", f"{base}/input/data"]
    for channel in options.channels:
        argv += ["--channel", f"{channel.name}={channel.path}"]
    argv += ["--epochs", str(options.epochs), "--rate", "unlimited" if rate is None else repr(rate)]
    return argv + (["--recordio"] if options.recordio else []) + (["--gunzip"] if options.gzip else [])


def _supervisor_argv(workdir: str, options: BenchOptions) -> list[str]:
    argv = [sys.executable, "-m", "smsupervise", "--log-format", "json", "--grace-period", GRACE]
    if options.relay:
        argv += ["--pipe-relay", "--pipe-relay-dir", os.path.join(workdir, "relay")]
    return [*argv, "train"]


def _job_env(base: str, command: tuple[str, ...], env: Mapping[str, str]) -> dict[str, str]:
    """Our environment without anything that would change what smsupervise does, plus the job."""
    clean = {
        key: value
        for key, value in env.items()
        if not key.startswith(("SMSUPERVISE_", "SM_", "SAGEMAKER_")) or key == "SMSUPERVISE_PYTHON"
    }
    return {**clean, "SAGEMAKER_BASE_DIR": base, "SMSUPERVISE_TRAIN": shlex.join(command)}


def _die_with_us() -> Callable[[], None]:
    """For the child, run between fork and exec: SIGTERM when the harness dies, however it dies
    (PR_SET_PDEATHSIG), so a killed harness leaves no emulator or job behind (smsupervise then stops
    the reader gracefully). Looked up here, in the parent: the child only makes the call."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return arm


def _ours(record: dict[str, Any]) -> bool:
    return record.get("logger") == "smsupervise"


def _platform(record: dict[str, Any]) -> bool:
    return "event" in record


class _Processes:
    """The two processes of a run and their collectors."""

    def __init__(self, workdir: str, spec: RunSpec, options: BenchOptions, env: Mapping[str, str]) -> None:
        base = _tree(workdir, options)
        pipe = subprocess.PIPE
        arm = _die_with_us()
        self.emulator = subprocess.Popen(
            _emulator_argv(base, options, spec.rate),
            stdin=subprocess.DEVNULL,
            stdout=pipe,
            stderr=pipe,
            preexec_fn=arm,  # noqa: PLW1509 - it makes one system call, nothing that takes a lock
        )
        self.platform = _Collector(self.emulator.stderr, _platform)  # type: ignore[arg-type]
        self.supervisor = subprocess.Popen(
            _supervisor_argv(workdir, options),
            env=_job_env(base, spec.command, env),
            stdin=subprocess.DEVNULL,
            stdout=pipe,
            stderr=pipe,
            preexec_fn=arm,  # noqa: PLW1509 - it makes one system call, nothing that takes a lock
        )
        self.events = _Collector(self.supervisor.stderr, _ours)  # type: ignore[arg-type]
        self.stdout = _Collector(self.supervisor.stdout, lambda _: False)  # type: ignore[arg-type]
        for collector in (self.platform, self.events, self.stdout):
            collector.start()

    def wait_supervisor(self, deadline: float) -> tuple[int, float, bool]:
        """smsupervise's exit code and total CPU (its own and its reaped children's); True if the
        deadline passed first (it was then stopped with SIGTERM, as SageMaker stops a job)."""
        timed_out = False
        while True:
            pid, status, usage = os.wait4(self.supervisor.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                self.supervisor.returncode = code  # reaped here: Popen must not wait for it again
                return code, usage.ru_utime + usage.ru_stime, timed_out
            if not timed_out and time.monotonic() > deadline:
                timed_out = True
                self.supervisor.terminate()
            time.sleep(POLL)

    def finish_platform(self) -> None:
        """Let the emulator finish; stop it if it still waits for a reader (an epoch not read)."""
        end = time.monotonic() + SETTLE
        while self.emulator.poll() is None and time.monotonic() < end:
            time.sleep(POLL)
        if self.emulator.poll() is None:
            self.emulator.terminate()
            self.emulator.wait(10)
        for collector in (self.platform, self.events, self.stdout):
            collector.join(10)

    def kill(self) -> None:
        """Ctrl-C: stop both (smsupervise stops the reader's group gracefully) and collect them."""
        for process in (self.supervisor, self.emulator):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in (self.supervisor, self.emulator):
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                process.wait(30)


def run(spec: RunSpec, options: BenchOptions, workdir: str, env: Mapping[str, str]) -> RunResult:
    """Run the reader once at ``spec.rate``; the result says what went wrong, if anything did."""
    began = time.monotonic()
    processes = _Processes(workdir, spec, options, env)
    try:
        outcome = processes.wait_supervisor(began + options.timeout)
        processes.finish_platform()
    except BaseException:
        processes.kill()
        raise
    return _result(spec, options, processes, outcome, time.monotonic() - began)


def _describe_exit(code: int) -> str:
    if code > 128:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(code - 128).name} (exit code {code})"
    return f"exited with code {code}"


def _problem(
    options: BenchOptions, processes: _Processes, code: int, timed_out: bool, missing: list[str]
) -> str | None:
    """Why a run is not a measurement, with what to do about it; None when it is one."""
    events = processes.events.events
    tail = "; ".join(list(processes.events.tail)[-5:])
    last = f" Last lines of its stderr: {tail}" if tail else ""
    failed = next((e for e in events if e.get("event") == "start_failed"), None)
    if failed is not None:
        return f"smsupervise could not start the reader: {failed.get('error')}"
    platform = [e for e in processes.platform.events if e.get("event") == "channel_failed"]
    if platform:
        where, error = platform[0].get("channel"), platform[0].get("error")
        return f"the platform's side failed on channel {where}: {error}"
    if timed_out:
        return (
            f"the run took longer than --timeout {options.timeout:g} s and was stopped with SIGTERM: "
            "does the reader wait for a FIFO that never comes (check the channel names and "
            "--epochs), or is the data too big for the rate?" + last
        )
    if code != 0:
        return f"the reader failed: it {_describe_exit(code)}.{last}"
    if missing:
        return (
            f"the reader exited (code 0) without reading {', '.join(missing)}: it must read "
            f"--epochs {options.epochs} epoch(s) of every channel (SM_HP_EPOCHS tells it how many); "
            "read them all or give a smaller --epochs"
        )
    return None


def _result(
    spec: RunSpec,
    options: BenchOptions,
    processes: _Processes,
    outcome: tuple[int, float, bool],
    wall: float,
) -> RunResult:
    code, cpu, timed_out = outcome
    events = processes.events.events
    written = [e for e in processes.platform.events if e.get("event") == "epoch_streamed"]
    relayed = [e for e in events if e.get("event") == "pipe_epoch_done"] if options.relay else None
    channels = [channel.name for channel in options.channels]
    epochs = epochs_from_events(channels, options.epochs, written, relayed)
    missing = [f"{e.channel}_{e.epoch}" for e in epochs if e.ended == "not read"]
    own = next((e.get("cpu_s") for e in events if e.get("event") == "exiting"), None)
    reader_cpu = max(0.0, cpu - own) if isinstance(own, int | float) else None
    started = not any(e.get("event") == "start_failed" for e in events)
    return RunResult(
        reader=spec.reader,
        rate=spec.rate,
        epochs=epochs,
        exit_code=code if started else None,
        reader_cpu_s=reader_cpu if started else None,
        wall_s=wall,
        problem=_problem(options, processes, code, timed_out, missing),
    )
