"""The control socket of a real smsupervise, as a subreaper and as PID 1, driven by the real client.

In PID-1 mode the client runs inside the supervisor's PID namespace (``nsenter``), as it would in
the container, wherever it reads /proc; status, logs and acting commands work from outside too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from smsupervise.linux.proctree import descendants
from tests.conftest import PYTHON, Supervised, events, fd_targets, helper, sleep_until
from tests.debug.conftest import CLIENT_ENV

NEEDS_SETPRIV = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (util-linux)"
)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A directory for the control socket that other uids may enter (for the setpriv tests)."""
    path = Path(tempfile.mkdtemp(prefix="smsupervise-dbg-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _client(mode: str, run: Supervised, *args: str) -> subprocess.CompletedProcess[str]:
    reads_proc = "tree" in args or "stacks" in args
    prefix = ["nsenter", "-t", str(run.init_pid), "-p", "-m"] if mode == "pid1" and reads_proc else []
    return subprocess.run(
        [*prefix, PYTHON, "-m", "smsupervise.debug", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=CLIENT_ENV,
    )


def _json(mode: str, run: Supervised, sock: Path, *args: str) -> Any:
    done = _client(mode, run, "--socket", str(sock), "--json", *args)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def _wait_for_output(run: Supervised, message: str) -> None:
    """Read the supervisor's stdout (JSON records) until the job printed ``message``."""
    assert run.proc.stdout is not None
    for line in run.proc.stdout:
        if orjson.loads(line).get("msg") == message:
            return
    raise AssertionError(f"the job ended before printing {message!r}")


def _job_pid(run: Supervised) -> int:
    """The job's pid as seen from here (the supervisor's first child)."""
    return sleep_until(lambda: descendants(run.init_pid)[:1], what="the job")[0]


def test_status_during_a_run_and_during_a_stop(
    start: Callable[..., Supervised], mode: str, sock_dir: Path
) -> None:
    """status names the child; after SIGTERM it shows the grace phase with a deadline counting down."""
    sock = sock_dir / "c.sock"
    run = start(
        "--control-socket", str(sock), "--grace-period", "30", PYTHON, helper("debug_job.py"), "--ignore-term"
    )
    _wait_for_output(run, "ready")
    status = _json(mode, run, sock, "status")
    assert status["mode"] == "exec"
    assert status["step"] == "command"
    assert status["child"]["argv"] == [PYTHON, helper("debug_job.py"), "--ignore-term"]
    assert status["stop"] is None
    run.signal(signal.SIGTERM)
    stopping = sleep_until(lambda: _json(mode, run, sock, "status")["stop"], what="the stop in status")
    assert stopping["reason"] == "SIGTERM"
    assert stopping["phase"] == "grace"
    first = stopping["seconds_left"]
    assert 0 < first <= 30
    later = sleep_until(
        lambda: (s := _json(mode, run, sock, "status")["stop"]["seconds_left"]) < first and s,
        what="countdown",
    )
    assert later < first
    assert _json(mode, run, sock, "status")["stop"]["budget_left"] <= 120
    human = _client(mode, run, "--socket", str(sock), "status").stdout
    assert "stop: SIGTERM, phase grace" in human
    run.signal(signal.SIGTERM)  # a second one: SIGKILL now
    assert run.wait()[0] == 137


def test_tree_over_the_socket_flags_the_term_ignoring_job(
    start: Callable[..., Supervised], mode: str, sock_dir: Path
) -> None:
    """tree (root: the supervisor) shows the job below it with its warning and rank."""
    sock = sock_dir / "c.sock"
    run = start(
        "--control-socket",
        str(sock),
        "sh",
        "-c",
        f"RANK=3 exec {PYTHON} {helper('debug_job.py')} --ignore-term",
    )
    _wait_for_output(run, "ready")
    rows = _json(mode, run, sock, "--interval", "0.2", "tree")
    assert rows[0]["depth"] == 0
    assert rows[0]["warning"] is None  # smsupervise itself catches TERM
    job = next(row for row in rows if helper("debug_job.py") in row["argv"])
    assert job["rank"] == "3"
    assert job["warning"] == "ignores SIGTERM: the stop will end in SIGKILL"
    run.kill()


def test_logs_follow_streams_new_records(start: Callable[..., Supervised], mode: str, sock_dir: Path) -> None:
    """logs -f prints the backlog, then a line the job writes after the client connected."""
    sock = sock_dir / "c.sock"
    run = start(
        "--control-socket",
        str(sock),
        "sh",
        "-c",
        "echo first; while read l; do echo got $l; done",
        stdin=subprocess.PIPE,
    )
    _wait_for_output(run, "first")
    follower = subprocess.Popen(
        [PYTHON, "-m", "smsupervise.debug", "--socket", str(sock), "logs", "-f"],
        stdout=subprocess.PIPE,
        text=True,
        env=CLIENT_ENV,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().strip().endswith(": first")  # the backlog: it is connected
        assert run.proc.stdin is not None
        run.proc.stdin.write(b"hello\n")
        run.proc.stdin.flush()
        assert follower.stdout.readline().strip().endswith(": got hello")

        def messages(stream: str) -> list[str]:
            done = _client(mode, run, "--socket", str(sock), "--json", "logs", "--stream", stream)
            return [orjson.loads(line)["msg"] for line in done.stdout.splitlines()]

        assert messages("stdout") == ["first", "got hello"]
        assert messages("stderr") == []  # the twin: the filter filters
    finally:
        follower.kill()
        follower.communicate(timeout=10)
        run.kill()


def test_signal_goes_through_the_supervisor_and_is_recorded(
    start: Callable[..., Supervised], mode: str, sock_dir: Path
) -> None:
    """signal USR1 reaches the job's group and the events name who asked."""
    sock = sock_dir / "c.sock"
    record = sock_dir / "signals"
    run = start("--control-socket", str(sock), PYTHON, helper("print_signals.py"), str(record))
    sleep_until(lambda: record.exists() and "ready" in record.read_text(), what="ready")
    done = _client(mode, run, "--socket", str(sock), "signal", "USR1")
    assert done.returncode == 0, done.stderr
    sleep_until(lambda: record.read_text().split()[1:] == ["10"], what="SIGUSR1 recorded")
    run.signal(signal.SIGTERM)
    _, _, err = run.wait()
    found = [e for e in events(err) if e["event"] in ("debug_request", "signal_forwarded")]
    assert found[0]["event"] == "debug_request"
    assert found[0]["signal"] == "SIGUSR1"
    assert found[0]["peer_uid"] == os.getuid()
    assert found[1] == {**found[1], "event": "signal_forwarded", "signal": "SIGUSR1"}


def test_checkpoint_runs_the_hook_while_training_goes_on(
    start: Callable[..., Supervised], mode: str, sock_dir: Path
) -> None:
    """checkpoint runs --checkpoint-hook now; the job keeps running and no stop begins."""
    sock = sock_dir / "c.sock"
    saved = sock_dir / "saved"
    hook = f"sh -c 'echo $SMSUPERVISE_STOP_REASON > {saved}'"
    run = start("--control-socket", str(sock), "--checkpoint-hook", hook, PYTHON, helper("debug_job.py"))
    _wait_for_output(run, "ready")
    result = _json(mode, run, sock, "checkpoint")
    assert result["exit_code"] == 0
    assert saved.read_text() == "CheckpointRequested\n"
    status = _json(mode, run, sock, "status")
    assert status["stop"] is None
    assert run.proc.poll() is None
    run.signal(signal.SIGTERM)
    _, _, err = run.wait()
    names = [e["event"] for e in events(err)]
    assert names.index("checkpoint_done") < names.index("stop_requested")


def test_checkpoint_without_a_hook_is_refused_with_the_fix(
    start: Callable[..., Supervised], mode: str, sock_dir: Path
) -> None:
    """The negative twin: no hook configured, the client says which option to set."""
    sock = sock_dir / "c.sock"
    run = start("--control-socket", str(sock), PYTHON, helper("debug_job.py"))
    _wait_for_output(run, "ready")
    done = _client(mode, run, "--socket", str(sock), "checkpoint")
    assert done.returncode == 1
    assert "start smsupervise with --checkpoint-hook CMD" in done.stderr
    run.kill()


@NEEDS_SETPRIV
def test_another_uid_is_refused_and_a_reader_cannot_act(
    start: Callable[..., Supervised], mode: str, sock_dir: Path
) -> None:
    """uid 1000 outside the reader group is refused; inside it, status works and signal does not."""
    sock = sock_dir / "c.sock"
    run = start("--control-socket", str(sock), "--control-group", "1000", PYTHON, helper("debug_job.py"))
    _wait_for_output(run, "ready")

    def as_user(gid: int, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "setpriv",
                "--reuid=1000",
                f"--regid={gid}",
                "--clear-groups",
                PYTHON,
                "-m",
                "smsupervise.debug",
                "--socket",
                str(sock),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=CLIENT_ENV,
        )

    stranger = as_user(1001, "status")
    assert stranger.returncode == 1
    assert "permission denied" in stranger.stderr
    reader = as_user(1000, "--json", "status")
    assert reader.returncode == 0, reader.stderr
    assert orjson.loads(reader.stdout)["step"] == "command"
    act = as_user(1000, "signal", "KILL")
    assert act.returncode == 1
    assert "may read status and logs but not act" in act.stderr
    assert run.proc.poll() is None  # the job was not killed
    run.kill()


def test_the_socket_fd_never_reaches_the_job(
    start: Callable[..., Supervised], mode: str, sock_dir: Path
) -> None:
    """The job holds no fd of the control socket; the supervisor does (the twin)."""
    sock = sock_dir / "c.sock"
    run = start("--control-socket", str(sock), PYTHON, helper("debug_job.py"))
    _wait_for_output(run, "ready")
    unix = Path("/proc/net/unix").read_text().splitlines()
    inode = next(line.split()[6] for line in unix if line.endswith(str(sock)))

    assert f"socket:[{inode}]" in fd_targets(run.init_pid)
    assert f"socket:[{inode}]" not in fd_targets(_job_pid(run))
    run.kill()


def test_exec_runs_beside_the_job_with_its_env_and_cwd(
    start: Callable[..., Supervised], mode: str, sock_dir: Path, tmp_path: Path
) -> None:
    """exec streams the command's output and exit code; its env and cwd are the job's."""
    sock = sock_dir / "c.sock"
    run = start("--control-socket", str(sock), PYTHON, helper("debug_job.py"), cwd=str(tmp_path))
    _wait_for_output(run, "ready")
    done = _client(
        mode, run, "--socket", str(sock), "exec", "--", "sh", "-c", "pwd; env -0 > env.bin; exit 7"
    )
    assert done.returncode == 7
    assert done.stdout == f"{tmp_path}\n"
    shell_sets = (b"PWD=", b"SHLVL=", b"_=")  # what sh itself sets or changes

    def environ(raw: bytes) -> set[bytes]:
        return {entry for entry in raw.split(b"\0") if entry and not entry.startswith(shell_sets)}

    theirs = environ(Path(f"/proc/{_job_pid(run)}/environ").read_bytes())
    assert environ((tmp_path / "env.bin").read_bytes()) == theirs
    assert b"SMSUPERVISE_DEBUG_SOCKET=" + str(sock).encode() in theirs
    run.kill()


def _train(base: Path, command: str) -> dict[str, str]:
    """An /opt/ml-like tree whose `train` runs ``command`` (SMSUPERVISE_TRAIN)."""
    (base / "output").mkdir(parents=True)
    (base / "input" / "config").mkdir(parents=True)
    return {"SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_TRAIN": command}


def _keep_alive_run(
    start: Callable[..., Supervised], sock: Path, base: Path, seconds: str = "60"
) -> Supervised:
    env = {**os.environ, **_train(base, "sh -c 'sleep 300 & echo failing; exit 3'")}
    run = start("--control-socket", str(sock), "--keep-alive-on-failure", seconds, "train", env=env)
    _wait_for_output(run, "failing")
    return run


def test_keep_alive_after_failure_until_release(
    start: Callable[..., Supervised], mode: str, sock_dir: Path, tmp_path: Path
) -> None:
    """The failure file is written first; status counts down; the leftover is kept; release ends it."""
    sock = sock_dir / "c.sock"
    run = _keep_alive_run(start, sock, tmp_path)
    status = sleep_until(
        lambda: _json(mode, run, sock, "status")["keep_alive"] and _json(mode, run, sock, "status")
    )
    assert (tmp_path / "output" / "failure").read_text().startswith("Training exited with code 3")
    assert 0 < status["keep_alive"]["seconds_left"] <= 60
    assert [row["argv"] for row in _json(mode, run, sock, "--interval", "0", "tree")][-1] == ["sleep", "300"]
    assert _client(mode, run, "--socket", str(sock), "release").returncode == 0
    code, _, err = run.wait()
    assert code == 3
    names = [e["event"] for e in events(err)]
    assert (
        names.index("failure_written") < names.index("keep_alive_started") < names.index("keep_alive_ended")
    )
    assert next(e for e in events(err) if e["event"] == "keep_alive_ended")["how"] == "released"
    assert "leftovers_terminated" in names  # the sleep was ended after the keep-alive, not before


def test_sigterm_ends_a_keep_alive_at_once(
    start: Callable[..., Supervised], mode: str, sock_dir: Path, tmp_path: Path
) -> None:
    """SIGTERM during the keep-alive ends it (no stop sequence: the job has already exited)."""
    sock = sock_dir / "c.sock"
    run = _keep_alive_run(start, sock, tmp_path)
    sleep_until(lambda: _json(mode, run, sock, "status")["keep_alive"], what="the keep-alive")
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 3
    ended = next(e for e in events(err) if e["event"] == "keep_alive_ended")
    assert ended["how"] == "SIGTERM"
    assert "stop_requested" not in [e["event"] for e in events(err)]


def test_status_shows_what_a_failed_job_left_behind(
    start: Callable[..., Supervised], mode: str, sock_dir: Path, tmp_path: Path
) -> None:
    """During the keep-alive, status lists the background sleep the failed job left running."""
    sock = sock_dir / "c.sock"
    run = _keep_alive_run(start, sock, tmp_path)
    status = sleep_until(
        lambda: (s := _json(mode, run, sock, "status"))["keep_alive"] and s, what="keep-alive"
    )
    assert status["running"] is False
    (row,) = status["leftovers"]
    assert row["argv"] == ["sleep", "300"]
    assert row["state"] == "S"
    human = _client(mode, run, "--socket", str(sock), "status").stdout
    assert f"pid {row['pid']} pgid {row['pgid']} S: sleep 300" in human
    assert _client(mode, run, "--socket", str(sock), "release").returncode == 0
    assert run.wait()[0] == 3


def test_status_shows_no_leftovers_when_the_failed_job_left_none(
    start: Callable[..., Supervised], mode: str, sock_dir: Path, tmp_path: Path
) -> None:
    """The twin: a failed job that started nothing in the background leaves no leftovers."""
    sock = sock_dir / "c.sock"
    env = {**os.environ, **_train(tmp_path, "sh -c 'echo failing; exit 3'")}
    run = start("--control-socket", str(sock), "--keep-alive-on-failure", "60", "train", env=env)
    _wait_for_output(run, "failing")
    status = sleep_until(
        lambda: (s := _json(mode, run, sock, "status"))["keep_alive"] and s, what="keep-alive"
    )
    assert status["leftovers"] == []
    assert "leftovers: none" in _client(mode, run, "--socket", str(sock), "status").stdout
    assert _client(mode, run, "--socket", str(sock), "release").returncode == 0
    assert run.wait()[0] == 3


_PRINT_ON_CUE = (
    "import os, sys, time\n"
    "print('ready', flush=True)\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
    "for n in range(100): print(f'line {n}', flush=True)\n"
    "print('printed', file=sys.stderr, flush=True)\n"
    "time.sleep(300)\n"
)


def _print_on_cue(start: Callable[..., Supervised], sock: Path, cue: Path, close_stdout: bool) -> Supervised:
    """A job that prints 100 lines once ``cue`` exists, our stdout's reader gone or not by then."""
    run = start("--control-socket", str(sock), PYTHON, "-c", _PRINT_ON_CUE, str(cue))
    _wait_for_output(run, "ready")
    if close_stdout:
        assert run.proc.stdout is not None
        run.proc.stdout.close()
    cue.touch()
    return run


def test_status_counts_the_records_dropped_when_our_stdout_reader_is_gone(
    start: Callable[..., Supervised], mode: str, sock_dir: Path, tmp_path: Path
) -> None:
    """Our stdout's reader went away: the 100 lines after that are counted as dropped records of
    stdout (stderr lost none)."""
    sock = sock_dir / "c.sock"
    run = _print_on_cue(start, sock, tmp_path / "cue", close_stdout=True)
    streams = sleep_until(
        lambda: (s := _json(mode, run, sock, "status")["streams"])["stdout"]["records"] == 101 and s,
        what="the 100 lines relayed",
    )
    assert streams["stdout"]["dropped_records"] == 100
    assert streams["stdout"]["dropped_bytes"] > 100 * len("line 99")
    assert streams["stderr"]["dropped_records"] == streams["stderr"]["dropped_bytes"] == 0
    assert "dropped 100 records" in _client(mode, run, "--socket", str(sock), "status").stdout
    run.kill()


def test_status_counts_no_drops_while_our_stdout_is_read(
    start: Callable[..., Supervised], mode: str, sock_dir: Path, tmp_path: Path
) -> None:
    """The twin: with our stdout still read, the same 100 lines are relayed and none dropped."""
    sock = sock_dir / "c.sock"
    run = _print_on_cue(start, sock, tmp_path / "cue", close_stdout=False)
    _wait_for_output(run, "line 99")
    streams = _json(mode, run, sock, "status")["streams"]
    assert streams["stdout"]["records"] == 101
    assert streams["stdout"]["dropped_records"] == streams["stdout"]["dropped_bytes"] == 0
    run.kill()


def test_keep_alive_never_outlasts_max_runtime(
    start: Callable[..., Supervised], mode: str, sock_dir: Path, tmp_path: Path
) -> None:
    """--max-runtime cuts the keep-alive short (it was asked for 600 s)."""
    sock = sock_dir / "c.sock"
    env = {**os.environ, **_train(tmp_path, "sh -c 'echo failing; exit 3'")}
    run = start(
        "--control-socket",
        str(sock),
        "--keep-alive-on-failure",
        "600",
        "--max-runtime",
        "3",
        "train",
        env=env,
    )
    code, _, err = run.wait()
    assert code == 3
    started = next(e for e in events(err) if e["event"] == "keep_alive_started")
    assert started["seconds"] <= 3
    assert next(e for e in events(err) if e["event"] == "keep_alive_ended")["how"] in (
        "expired",
        "MaxRuntimeExceeded",
    )


def test_no_keep_alive_after_success(
    start: Callable[..., Supervised], sock_dir: Path, tmp_path: Path
) -> None:
    """The negative twin: a job that succeeds is not kept alive."""
    env = {**os.environ, **_train(tmp_path, "true")}
    run = start(
        "--control-socket", str(sock_dir / "c.sock"), "--keep-alive-on-failure", "600", "train", env=env
    )
    code, _, err = run.wait()
    assert code == 0
    assert "keep_alive_started" not in [e["event"] for e in events(err)]


def test_stacks_of_a_job_that_opted_in(start: Callable[..., Supervised], mode: str, sock_dir: Path) -> None:
    """smsupervise tells the job where to dump; the helper opts in; stacks needs no ptrace."""
    sock = sock_dir / "c.sock"
    run = start("--control-socket", str(sock), PYTHON, helper("debug_job.py"), "--opt-in")
    _wait_for_output(run, "ready")
    found = _json(mode, run, sock, "stacks")
    assert [item["method"] for item in found] == ["faulthandler"]  # the job; not smsupervise itself
    assert "deep_in_training_loop" in found[0]["text"]
    assert run.proc.poll() is None
    run.kill()


def test_a_smsupervise_nested_in_the_job_runs(start: Callable[..., Supervised], sock_dir: Path) -> None:
    """The job's environment names the socket in a variable a nested smsupervise does not read as
    its own --control-socket (it would find it taken and refuse to start)."""
    sock = sock_dir / "c.sock"
    run = start("--control-socket", str(sock), PYTHON, "-m", "smsupervise", "--log-level", "error", "true")
    code, _, err = run.wait()
    assert code == 0, err


@pytest.mark.parametrize("connected", [False, True])
def test_the_socket_file_is_there_while_the_run_is_and_goes_with_it(
    start: Callable[..., Supervised], mode: str, sock_dir: Path, connected: bool
) -> None:
    """The socket file exists from ``control_socket_ready`` and is removed when the run ends after
    SIGTERM, whether nobody connected (the server was never imported) or a client did."""
    sock = sock_dir / "c.sock"
    run = start("--control-socket", str(sock), PYTHON, helper("debug_job.py"))
    run.wait_event("control_socket_ready")
    assert sock.is_socket()
    if connected:
        assert _json(mode, run, sock, "status")["mode"] == "exec"
    run.signal(signal.SIGTERM)
    code, _, _ = run.wait()
    assert code == 143
    assert not sock.exists()
