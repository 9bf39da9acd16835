"""The graceful stop, black-box, as a subreaper and as PID 1: checkpoint hook, checkpoint signal,
grace, SIGKILL, the stop budget, max runtime, stops during start-up, resuming from the checkpoint.

The training job is the bundled example (examples/job/src/train.py): it writes numbered checkpoints
with atomic renames, saves one more on SIGTERM or SIGUSR1, and resumes from the newest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, ROOT, Supervised, event_names, events, sleep_until, supervisor_argv
from tests.sagemaker import fixtures

USER_PYTHON = shutil.which("python3") or PYTHON
SLOW = {"epochs": "100000", "step-seconds": "0.002"}  # runs until stopped, a checkpoint per ~40 ms


def _env(base: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_PYTHON": USER_PYTHON,
        "PYTHONPATH": str(ROOT / "supervisor"),  # so jobs can import smsupervise.checkpoint
        **extra,
    }


def _start(mode: str, base: Path, *args: str, **env: str) -> Supervised:
    return Supervised(mode, supervisor_argv(mode, *args), env=_env(base, **env))


def _checkpoints(base: Path) -> list[Path]:
    return sorted((base / "checkpoints").glob("ckpt-*.json"))


def _load(path: Path) -> dict[str, Any]:
    """Load a checkpoint the way train.py does, checking its digest: it must be complete."""
    record = json.loads(path.read_text())
    body = json.dumps(record["state"], sort_keys=True).encode()
    assert hashlib.sha256(body).hexdigest() == record["sha256"], f"{path} is corrupt"
    return dict(record["state"])


def _wait_training(base: Path, count: int = 2) -> None:
    sleep_until(lambda: len(_checkpoints(base)) >= count, timeout=30, what=f"{count} checkpoints")


def _index(names: list[str], name: str) -> int:
    assert name in names, f"{name} not in {names}"
    return names.index(name)


def test_checkpoint_hook_runs_before_the_child_sees_sigterm(mode: str, tmp_path: Path) -> None:
    """SIGTERM mid-run: the hook runs with the training environment and finishes before SIGTERM
    reaches the job; the job saves a last checkpoint, which is complete; the failure file says it all."""
    base = fixtures.example(tmp_path, **SLOW)
    hook_log = tmp_path / "hook.log"
    says = "$SMSUPERVISE_STOP_REASON $SMSUPERVISE_DEADLINE $SMSUPERVISE_CHECKPOINT_DIR"
    hook = f"sh -c 'echo {says} > {hook_log}'"
    run = _start(mode, base, "--checkpoint-hook", hook, "train")
    _wait_training(base)
    asked = time.time()
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 0, err.decode()[-3000:]  # the job saved and exited 0 on SIGTERM: its code stands
    names = event_names(err)
    assert _index(names, "stop_requested") < _index(names, "checkpoint_hook_started")
    assert (
        _index(names, "checkpoint_done") < _index(names, "signal_forwarded") < _index(names, "child_exited")
    )
    done = next(e for e in events(err) if e["event"] == "checkpoint_done")
    assert done["how"] == "hook exited"
    assert done["hook_exit_code"] == 0
    reason, deadline, checkpoint_dir = hook_log.read_text().split()
    assert reason == "SIGTERM"
    assert asked + 55 <= int(deadline) <= asked + 62  # --checkpoint-timeout 60 from the request
    assert checkpoint_dir == str(base / "checkpoints")
    newest = _load(_checkpoints(base)[-1])  # complete, and mid-epoch: saved on SIGTERM
    assert newest["step"] > 0
    assert not list((base / "checkpoints").glob("*.tmp"))
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("Stopped by SIGTERM after ")
    assert "; checkpoint hook finished in " in failure
    assert "(exit 0); training exited with code 0 after " in failure
    assert not (base / "output" / "success").exists()  # a stopped run did not finish
    exiting = next(e for e in events(err) if e["event"] == "exiting")
    assert failure.startswith(exiting["stop"])  # the same words in the event log


def test_a_resumed_run_continues_with_the_uninterrupted_losses(mode: str, tmp_path: Path) -> None:
    """Stop mid-epoch, start again on the same tree: the final losses equal an uninterrupted run's."""
    hps = {"epochs": "12", "step-seconds": "0.004"}
    whole = fixtures.example(tmp_path / "whole", **hps)
    assert (
        subprocess.run(
            supervisor_argv(mode, "train"), env=_env(whole), capture_output=True, timeout=120, check=False
        ).returncode
        == 0
    )
    expected = json.loads((whole / "model" / "model.json").read_text())

    base = fixtures.example(tmp_path / "stopped", **hps)
    run = _start(mode, base, "train")
    _wait_training(base, 3)
    run.signal(signal.SIGTERM)
    assert run.wait()[0] == 0
    stopped_at = _load(_checkpoints(base)[-1])
    assert stopped_at["epoch"] < 12
    resumed = subprocess.run(
        supervisor_argv(mode, "train"), env=_env(base), capture_output=True, timeout=120, check=False
    )
    assert resumed.returncode == 0
    got = json.loads((base / "model" / "model.json").read_text())
    assert got["losses"] == expected["losses"]
    assert (got["w"], got["b"]) == (expected["w"], expected["b"])
    assert (base / "output" / "success").exists()
    assert not (base / "output" / "failure").exists()  # the stopped run's reason was stale


def test_a_hook_outliving_the_child_finishes_before_leftovers_are_cleaned(mode: str, tmp_path: Path) -> None:
    """The job exits during the checkpoint step (here: the hook tells it to); the hook is not
    treated as a leftover but finishes, and the failure file reports both."""
    base = fixtures.example(tmp_path)
    pid_file, hook_done = tmp_path / "job.pid", tmp_path / "hook.done"
    job = tmp_path / "job.py"
    job.write_text(
        "import os, signal, sys\n"
        "signal.signal(signal.SIGUSR2, lambda *a: sys.exit(0))\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "while True: signal.pause()\n"
    )
    hook = f"sh -c 'kill -USR2 $(cat {pid_file}); sleep 0.3; touch {hook_done}'"
    run = _start(mode, base, "--checkpoint-hook", hook, "train", SMSUPERVISE_TRAIN=f"python3 {job}")
    sleep_until(pid_file.exists, what="the job to start")
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 0
    assert hook_done.exists()  # not killed as a leftover
    assert "leftovers_terminated" not in event_names(err)
    failure = (base / "output" / "failure").read_text()
    assert "training exited" in failure
    assert "checkpoint hook finished" in failure


def test_a_hanging_hook_is_killed_at_its_timeout_and_the_stop_completes(mode: str, tmp_path: Path) -> None:
    """A hook still running at --checkpoint-timeout is SIGKILLed; the stop goes on to SIGTERM."""
    base = fixtures.example(tmp_path, **SLOW)
    run = _start(mode, base, "--checkpoint-hook", "sleep 1000", "--checkpoint-timeout", "1", "train")
    _wait_training(base)
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 0
    names = event_names(err)
    assert _index(names, "checkpoint_done") < _index(names, "checkpoint_hook_killed")
    assert _index(names, "checkpoint_hook_killed") < _index(names, "signal_forwarded")
    assert next(e for e in events(err) if e["event"] == "checkpoint_done")["how"] == "timeout"
    assert "checkpoint not done within --checkpoint-timeout 1 s" in (base / "output" / "failure").read_text()
    assert "leftovers_killed" not in names  # the hook was killed by the stop, not left behind


def _ignores_term(tmp_path: Path) -> str:
    """A command line for a process that ignores SIGTERM and sleeps."""
    script = tmp_path / "ignore_term.py"
    script.write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(1000)\n"
    )
    return f"python3 {script}"


def test_a_child_that_ignores_sigterm_is_sigkilled_at_the_grace(mode: str, tmp_path: Path) -> None:
    """A job that ignores SIGTERM is SIGKILLed when the grace expires, and the failure says so."""
    base = fixtures.example(tmp_path)
    run = _start(mode, base, "--grace-period", "1", "train", SMSUPERVISE_TRAIN=_ignores_term(tmp_path))
    sleep_until(lambda: _ignoring_term(run), what="the child to ignore SIGTERM")
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 137
    assert "grace_expired" in event_names(err)
    first = (base / "output" / "failure").read_text().splitlines()[0]
    assert first.startswith("Stopped by SIGTERM after ")
    assert first.endswith("training did not exit within the 1 s grace period and was SIGKILLed (exit 137).")


def _ignoring_term(run: Supervised) -> bool:
    """Whether a process below the init has SIGTERM ignored (its SigIgn mask in /proc)."""
    from smsupervise.linux.proctree import descendants

    for pid in descendants(run.init_pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("SigIgn:") and int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
                return True
    return False


@pytest.mark.slow
def test_the_whole_stop_fits_the_budget(mode: str, tmp_path: Path) -> None:
    """Worst case: a hanging hook, a child that ignores SIGTERM, a leftover that ignores it too.
    Every wait is bounded, so the stop ends within --stop-budget."""
    base = fixtures.example(tmp_path)
    budget = [
        "--stop-budget",
        "9",
        "--checkpoint-timeout",
        "1",
        "--grace-period",
        "1",
        "--leftover-grace",
        "1",
    ]
    ignores = _ignores_term(tmp_path)
    job = f"sh -c 'trap \"\" TERM; setsid {ignores} & {ignores}'"  # a leftover in its own session
    run = _start(mode, base, *budget, "--checkpoint-hook", "sleep 1000", "train", SMSUPERVISE_TRAIN=job)
    sleep_until(lambda: _ignoring_term(run), what="the children to ignore SIGTERM")
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 137
    names = event_names(err)
    order = ("stop_requested", "checkpoint_hook_killed", "grace_expired", "leftovers_killed", "exiting")
    assert [_index(names, name) for name in order] == sorted(_index(names, name) for name in order)
    # The one timed check of the suite (the budget is the claim), on smsupervise's own clock,
    # from the stop request to the exit; marked slow, with the budget itself as the bound.
    stamps = {e["event"]: _seconds(e["ts"]) for e in events(err)}
    assert stamps["exiting"] - stamps["stop_requested"] < 9


def test_a_stop_that_cannot_fit_the_budget_is_refused_at_start(mode: str, tmp_path: Path) -> None:
    """The negative twin: 60 + 100 + 5 + 5 > 120 is refused before anything runs, naming the options."""
    base = fixtures.example(tmp_path)
    marker = tmp_path / "ran"
    result = subprocess.run(
        supervisor_argv(mode, "--checkpoint-hook", "true", "--grace-period", "100", "train"),
        env=_env(base, SMSUPERVISE_TRAIN=f"touch {marker}"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    message = result.stderr.decode()
    for name in ("--stop-budget 120", "--checkpoint-timeout 60", "--grace-period 100", "--leftover-grace 5"):
        assert name in message
    assert not marker.exists()


def test_checkpoint_signal_with_the_helper_is_acknowledged(mode: str, tmp_path: Path) -> None:
    """--checkpoint-signal USR1: the job (using smsupervise.checkpoint) saves at its next safe point
    and acknowledges; only then does SIGTERM go out."""
    base = fixtures.example(tmp_path)
    saved = tmp_path / "saved"
    job = tmp_path / "job.py"
    job.write_text(f"""
import signal, time
from smsupervise import checkpoint
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # exit on our own after saving, whatever comes
stop = checkpoint.register(lambda: open({str(saved)!r}, "w").write(str(time.time())))
open({str(tmp_path / "ready")!r}, "w").close()
step = 0
while not stop.save_point():
    step += 1
    time.sleep(0.001)
print("stopped cleanly after", step, "steps", flush=True)
""")
    run = _start(mode, base, "--checkpoint-signal", "USR1", "train", SMSUPERVISE_TRAIN=f"python3 {job}")
    sleep_until(lambda: (tmp_path / "ready").exists(), what="the job to start")
    run.signal(signal.SIGTERM)
    code, out, err = run.wait()
    assert code == 0, err.decode()[-2000:]
    names = event_names(err)
    assert _index(names, "checkpoint_signal_sent") < _index(names, "checkpoint_done")
    assert next(e for e in events(err) if e["event"] == "checkpoint_done")["how"] == "acknowledged"
    assert saved.exists()
    assert b"stopped cleanly after" in out
    assert "checkpoint acknowledged after" in (base / "output" / "failure").read_text()


def test_max_runtime_stops_with_its_reason(mode: str, tmp_path: Path) -> None:
    """--max-runtime stops the job as SIGTERM would, with reason MaxRuntimeExceeded and its figure;
    the job saves a checkpoint on the way out."""
    base = fixtures.example(tmp_path, **SLOW)
    result = subprocess.run(
        # 4 s: long beside a loaded machine's start-up of the job, which must have its SIGTERM handler
        # before the limit for the checkpoint below (the limit counts from smsupervise's own start).
        supervisor_argv(mode, "--max-runtime", "4", "train"),
        env=_env(base),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0  # the example job saves on SIGTERM and exits 0
    requested = next(e for e in events(result.stderr) if e["event"] == "stop_requested")
    assert requested["reason"] == "MaxRuntimeExceeded"
    assert "max_runtime_exceeded" in event_names(result.stderr)
    exceeded = next(e for e in events(result.stderr) if e["event"] == "max_runtime_exceeded")
    assert exceeded["max_runtime"] == 4
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("Stopped: MaxRuntimeExceeded (--max-runtime 4 s) after ")
    assert _load(_checkpoints(base)[-1])["step"] > 0


def test_a_second_sigterm_cuts_the_checkpoint_step_short(mode: str, tmp_path: Path) -> None:
    """A second SIGTERM during the checkpoint step ends it at once (not at the 50 s timeout): the
    hook is killed and SIGTERM goes to the job."""
    base = fixtures.example(tmp_path, **SLOW)
    run = _start(
        mode,
        base,
        "--checkpoint-hook",
        "sleep 1000",
        "--checkpoint-timeout",
        "50",
        "--grace-period",
        "20",
        "train",
    )
    _wait_training(base)
    run.signal(signal.SIGTERM)
    sleep_until(lambda: _hook_running(run), what="the hook to start")
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 0
    names = event_names(err)
    assert (
        _index(names, "stop_advanced") < _index(names, "checkpoint_done") < _index(names, "signal_forwarded")
    )
    assert next(e for e in events(err) if e["event"] == "checkpoint_done")["how"] == "second stop signal"
    killed = next(e for e in events(err) if e["event"] == "checkpoint_hook_killed")
    assert killed["why"] == "second stop signal"
    assert "cut short after" in (base / "output" / "failure").read_text()


def _seconds(stamp: str) -> float:
    """An event's RFC 3339 timestamp as seconds since the epoch."""
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _hook_running(run: Supervised) -> bool:
    """Whether the checkpoint hook (``sleep 1000``) runs below the init."""
    from smsupervise.linux.proctree import descendants

    for pid in descendants(run.init_pid):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0"):
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("when", ["requirements", "first-moment"])
def test_a_stop_during_start_up_is_honoured(mode: str, tmp_path: Path, when: str) -> None:
    """SIGTERM while requirements.txt installs: pip is stopped, training never starts, the failure
    file says so. (A SIGTERM before any child exists is covered 100 times in test_core.)"""
    src = tmp_path / "src"
    shutil.copytree(fixtures.EXAMPLE / "src", src)
    (src / "requirements.txt").write_text("anything\n")
    base = fixtures.example(tmp_path, sagemaker_submit_directory=json.dumps(str(src)))
    fake = tmp_path / "python3"  # a python whose pip takes forever: the start-up we stop
    fake.write_text(
        f'#!/bin/sh\nif [ "$2" = pip ]; then touch {tmp_path}/installing; exec sleep 1000; fi\n'
        f'exec {USER_PYTHON} "$@"\n'
    )
    fake.chmod(0o755)
    run = _start(mode, base, "train", SMSUPERVISE_PYTHON=str(fake))
    if when == "requirements":
        sleep_until(lambda: (tmp_path / "installing").exists(), what="pip to start")
    else:  # as soon as smsupervise can catch it: before or during the plan, or as pip starts
        sleep_until(lambda: run.catching(signal.SIGTERM), interval=0.0, what="the SIGTERM handler")
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 143
    assert "training" not in [e.get("step") for e in events(err) if e["event"] == "child_spawned"]
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("Stopped by SIGTERM after ")
    assert "training did not start" in failure or "had not started" in failure
    assert not (base / "model" / "model.json").exists()


def test_a_hook_that_cannot_start_ends_the_checkpoint_step_at_once(mode: str, tmp_path: Path) -> None:
    """A checkpoint hook that cannot be started does not hold the stop for --checkpoint-timeout:
    the step ends at once, SIGTERM goes out, and the failure file says why the hook did not run."""
    base = fixtures.example(tmp_path, **SLOW)
    hook = str(tmp_path / "no-such-hook")
    run = _start(
        mode, base, "--checkpoint-hook", hook, "--checkpoint-timeout", "100", "--grace-period", "10", "train"
    )
    _wait_training(base)
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 0
    names = event_names(err)
    assert (
        _index(names, "checkpoint_hook_failed")
        < _index(names, "checkpoint_done")
        < _index(names, "signal_forwarded")
    )
    assert next(e for e in events(err) if e["event"] == "checkpoint_done")["how"] == "hook could not start"
    failure = (base / "output" / "failure").read_text()
    assert f"checkpoint hook could not start: {hook}: no such file" in failure
