"""What a hostile probe and the peers' test suites broke, made impossible: the job and its outcome
never depend on whoever reads our output, and a strange start (closed fds, a blocked signal mask)
changes nothing. Each scenario runs as a subreaper and as PID 1."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import PYTHON, Supervised, event_names, events, init_prefix, sleep_until, supervisor_argv


def _shell(mode: str, command: str, *args: str) -> list[str]:
    """``sh -c COMMAND`` around smsupervise, for redirections the test runner cannot express."""
    inner = " ".join(f"'{word}'" for word in [PYTHON, "-m", "smsupervise", *args])
    return [*init_prefix(mode), "sh", "-c", command.replace("SMSUPERVISE", inner)]


def test_a_reader_that_goes_away_does_not_kill_the_job(mode: str) -> None:
    """`smsupervise ... | head -1`: SIGPIPE is not forwarded; the shell job runs to its own exit code
    and the lines nobody could read are counted in `exiting`."""
    job = "i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done; exit 7"
    result = subprocess.run(_bash_pipeline(mode, job), capture_output=True, timeout=60, check=False)
    assert result.returncode == 7, result.stderr.decode()[-2000:]
    exiting = next(e for e in events(result.stderr) if e["event"] == "exiting")
    assert exiting["exit_code"] == 7
    assert exiting["undelivered_bytes"] > 0
    assert "signal_forwarded" not in event_names(result.stderr)


def _bash_pipeline(mode: str, job: str) -> list[str]:
    """smsupervise's stdout into `head -1`; returns smsupervise's own exit code (PIPESTATUS[0])."""
    argv = " ".join(f"'{w}'" for w in [*init_prefix(mode), PYTHON, "-m", "smsupervise", "sh", "-c", job])
    return ["bash", "-c", f"{argv} | head -1 >/dev/null; exit ${{PIPESTATUS[0]}}"]


def _with_a_stalled_reader(
    mode: str, base: Path, flush_timeout: str, sigterm_after_outcome: bool
) -> tuple[int, bytes]:
    """Run a train job that writes ~500 KB and exits 5, with our stdout a pipe nobody ever reads;
    optionally SIGTERM smsupervise once the failure file exists. Returns (exit code, stderr)."""
    from tests.conftest import Supervised

    (base / "output").mkdir(parents=True)
    job = f"{PYTHON} -c \"import sys; [print('y' * 200) for _ in range(2500)]; sys.exit(5)\""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            supervisor_argv(mode, "--flush-timeout", flush_timeout, "train"),
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_TRAIN": job},
        )
        os.close(write_end)
        if sigterm_after_outcome:
            sleep_until(lambda: (base / "output" / "failure").exists(), timeout=60, what="the failure file")
            Supervised.attach(mode, proc).signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(read_end)
    return proc.returncode, err


def test_a_stalled_reader_cannot_hang_the_exit(mode: str, tmp_path: Path) -> None:
    """A reader that never reads again: the failure file and the exit code come first, the final
    flush gives up at --flush-timeout, and what could not be delivered is counted."""
    code, err = _with_a_stalled_reader(mode, tmp_path / "ml", "1", sigterm_after_outcome=False)
    assert code == 5, err.decode()[-2000:]
    assert (tmp_path / "ml" / "output" / "failure").read_text().startswith("Training exited with code 5")
    exiting = next(e for e in events(err) if e["event"] == "exiting")
    assert exiting["undelivered_bytes"] > 0


def test_sigterm_during_the_final_flush_ends_it_at_once(mode: str, tmp_path: Path) -> None:
    """The twin with a long --flush-timeout: smsupervise still answers SIGTERM while it waits for
    the stalled reader, and leaves with the job's code."""
    code, err = _with_a_stalled_reader(mode, tmp_path / "ml", "1000", sigterm_after_outcome=True)
    assert code == 5
    assert "exiting" in event_names(err)


def test_closed_standard_fds_at_start_change_nothing(mode: str) -> None:
    """Started with stdin, stdout, stderr or all of them closed, smsupervise runs the job and
    returns its code (the fds are opened on /dev/null first); the job still gets fds 0-2."""
    for closing in ("<&-", ">&-", "2>&-", "<&- >&- 2>&-"):
        argv = _shell(mode, f"SMSUPERVISE {closing}", "sh", "-c", "[ -e /proc/self/fd/1 ] && exit 3")
        result = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        assert result.returncode == 3, (closing, result.stderr.decode()[-2000:])


def test_an_inherited_blocked_signal_mask_is_cleared(mode: str, tmp_path: Path) -> None:
    """A parent that blocked SIGTERM (pthread_sigmask) before exec'ing smsupervise: the stop still
    works, and the job starts with an empty mask."""
    ready = tmp_path / "ready"
    launcher = (
        "import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT]); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    job = f"grep SigBlk /proc/self/status; touch {ready}; exec sleep 60"  # the mask, then ready
    argv = supervisor_argv(mode, "--log-format", "raw", "sh", "-c", job)
    prefix = init_prefix(mode)
    proc = subprocess.Popen(
        [*prefix, PYTHON, "-c", launcher, *argv[len(prefix) :]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    from tests.conftest import Supervised

    run = Supervised.attach(mode, proc)
    sleep_until(ready.exists, what="the job to start")
    run.signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err.decode()[-2000:]
    assert out.decode().split()[-1] == "0000000000000000"


def test_an_environment_too_big_for_execve_is_a_config_error(mode: str, tmp_path: Path) -> None:
    """One hyperparameter that makes SM_HPS longer than the kernel takes for one variable: exit 2
    before anything runs, and the failure file names the file, the hyperparameter, the variable
    and the kernel's limit (not "Argument list too long")."""
    from tests.sagemaker import fixtures

    big = '"' + "x" * 140_000 + '"'
    base = fixtures.build(tmp_path, hyperparameters={"blob": big, "small": "1"})
    result = subprocess.run(
        supervisor_argv(mode, "train"),
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr.decode()[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert "hyperparameters.json" in failure
    assert "blob" in failure
    assert "MAX_ARG_STRLEN" in failure
    assert "child_spawned" not in event_names(result.stderr)


def test_relative_paths_are_resolved_and_we_leave_the_starting_directory(mode: str, tmp_path: Path) -> None:
    """A relative SAGEMAKER_BASE_DIR is taken from where smsupervise started; once the job runs,
    smsupervise's own cwd is / (it holds no mount busy) while the job keeps the cwd it was given;
    SMSUPERVISE_CHECKPOINT_DIR defaults under that base dir."""
    base = tmp_path / "ml"
    (base / "output").mkdir(parents=True)
    seen = tmp_path / "seen"
    job = f"pwd > {seen}; echo $SMSUPERVISE_CHECKPOINT_DIR >> {seen}; exec sleep 60"
    from tests.conftest import Supervised

    run = Supervised(
        mode,
        supervisor_argv(mode, "train"),
        cwd=tmp_path,
        env={**os.environ, "SAGEMAKER_BASE_DIR": "ml", "SMSUPERVISE_TRAIN": f"sh -c '{job}'"},
    )
    try:
        sleep_until(lambda: seen.exists() and len(seen.read_text().split()) == 2, what="the job")
        # Polled: smsupervise moves to / once the child has its cwd, and the job may write `seen`
        # before that (a loaded machine runs the child first); on the old code it never happens.
        sleep_until(lambda: os.readlink(f"/proc/{run.init_pid}/cwd") == "/", what="smsupervise's cwd to be /")
        job_cwd, checkpoints = seen.read_text().split()
        assert job_cwd == str(tmp_path)
        assert checkpoints == str(base / "checkpoints")
        run.signal(signal.SIGTERM)
        code, _, err = run.wait()
        assert code == 143, err.decode()[-3000:]
        assert (base / "output" / "failure").exists()  # the relative base dir was the right one
    finally:
        if run.proc.poll() is None:
            run.kill()


def test_own_events_are_bounded_when_stderr_stalls(mode: str, tmp_path: Path) -> None:
    """A signal storm while nobody reads our stderr: events beyond the cap are dropped and counted,
    never buffered without limit; once stderr is read again the run ends with the job's code."""
    done = tmp_path / "done"
    storm = (  # lock-step: each SIGWINCH is forwarded back before the next, so one event each
        "import os, signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGWINCH])\n"
        "for _ in range(30000):\n"
        "    os.kill(os.getppid(), signal.SIGWINCH)\n"
        "    signal.sigwaitinfo([signal.SIGWINCH])\n"
        f"open({str(done)!r}, 'w').close()\n"
        "raise SystemExit(6)\n"
    )
    argv = supervisor_argv(mode, "--flush-timeout", "30", PYTHON, "-c", storm)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = Supervised.attach(mode, proc)
    try:
        sleep_until(done.exists, timeout=90, what="the storm to end")
        _, err = proc.communicate(timeout=60)  # the reader comes back
    finally:
        run.kill()
    assert proc.returncode == 6
    exiting = next(e for e in events(err) if e["event"] == "exiting")
    assert exiting["dropped_events"] > 0
