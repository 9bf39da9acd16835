"""Hardening of the stop and of the control socket against the people the README calls harmless
(issue 29): a stopped job group, a relative --control-socket, a running on-demand checkpoint,
fd exhaustion, a slow follower, a connect/close loop. Real processes, as a subreaper and as PID 1.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from smsupervise.debug.protocol import Request
from smsupervise.linux.proctree import descendants
from tests.conftest import PYTHON, ROOT, Supervised, events, sleep_until
from tests.sagemaker import fixtures

# A job that records the signals it gets (one line each, in order) and says ready. TERM ends it
# with 0; the others go on.
MARKS_JOB = """\
import os, signal, sys, time
marks = sys.argv[1]
def note(signum, frame):
    with open(marks, "a") as file:
        file.write(signal.Signals(signum).name + "\\n")
    if signum == signal.SIGTERM:
        sys.exit(0)
for name in ("SIGTERM", "SIGUSR1", "SIGCONT"):
    signal.signal(getattr(signal, name), note)
os.write(1, b"ready\\n")
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def cleanup() -> Iterator[list[Path]]:
    """Directories the test made outside tmp_path (short socket paths), removed at the end."""
    made: list[Path] = []
    yield made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def _env(base: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "PYTHONPATH": str(ROOT / "supervisor"),
        **extra,
    }


def _marks_job(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "marks_job.py"
    script.write_text(MARKS_JOB)
    marks = tmp_path / "marks"
    return f"{PYTHON} {script} {marks}", marks


def _wait_ready(run: Supervised) -> None:
    """Read the supervisor's stdout (JSON records) until the job said ready."""
    assert run.proc.stdout is not None
    for line in run.proc.stdout:
        if orjson.loads(line).get("msg") == "ready":
            return
    raise AssertionError("the job ended before saying ready")


def _job_pid(run: Supervised) -> int:
    return sleep_until(lambda: descendants(run.init_pid)[:1], what="the job")[0]


def _state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()[0]


def _stopped_job(start: Callable[..., Supervised], tmp_path: Path, *args: str) -> tuple[Supervised, Path]:
    """A train run of the marks job, its process group stopped with SIGSTOP (as `signal STOP` or
    a forwarded SIGTSTP would), then SIGTERM to the supervisor."""
    base = fixtures.example(tmp_path)
    job, marks = _marks_job(tmp_path)
    run = start(*args, "train", env=_env(base, SMSUPERVISE_TRAIN=job))
    _wait_ready(run)
    pid = _job_pid(run)
    os.killpg(pid, signal.SIGSTOP)
    sleep_until(lambda: _state(pid) == "T", what="the job to be stopped")
    run.signal(signal.SIGTERM)
    return run, marks


def test_a_stopped_job_group_gets_its_term(start: Callable[..., Supervised], tmp_path: Path) -> None:
    """SIGTERM while the job group is stopped: the stop resumes it (SIGCONT after TERM), so the job
    runs its TERM handler and exits 0 well within the grace, instead of being SIGKILLed at its end;
    the checkpoint hook runs first as usual."""
    hook_mark = tmp_path / "hook"
    run, marks = _stopped_job(
        start, tmp_path, "--grace-period", "20", "--checkpoint-hook", f"touch {hook_mark}"
    )
    code, _, err = run.wait()
    assert code == 0, err.decode()[-2000:]
    assert hook_mark.exists()
    assert "TERM" in marks.read_text().split()[-1]
    names = [e["event"] for e in events(err)]
    assert "grace_expired" not in names
    resumed = [e for e in events(err) if e["event"] == "stopped_group_resumed"]
    assert resumed
    assert resumed[0]["after"] == "SIGTERM"


def test_a_stopped_job_group_gets_its_checkpoint_signal(
    start: Callable[..., Supervised], tmp_path: Path
) -> None:
    """--checkpoint-signal USR1 to a stopped group: it is resumed after the checkpoint signal
    (the job saves), then gets its TERM."""
    run, marks = _stopped_job(
        start, tmp_path, "--grace-period", "20", "--checkpoint-signal", "USR1", "--checkpoint-timeout", "2"
    )
    code, _, err = run.wait()
    assert code == 0, err.decode()[-2000:]
    got = marks.read_text().split()
    assert got.index("SIGUSR1") < got.index("SIGTERM")


def test_a_running_job_gets_no_sigcont(start: Callable[..., Supervised], tmp_path: Path) -> None:
    """The twin: a job that was not stopped gets its TERM and no SIGCONT it did not need."""
    base = fixtures.example(tmp_path)
    job, marks = _marks_job(tmp_path)
    run = start("--grace-period", "20", "train", env=_env(base, SMSUPERVISE_TRAIN=job))
    _wait_ready(run)
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 0, err.decode()[-2000:]
    assert marks.read_text().split() == ["SIGTERM"]
    assert "stopped_group_resumed" not in [e["event"] for e in events(err)]


def test_a_relative_control_socket_is_bound_in_the_start_directory(
    start: Callable[..., Supervised], cleanup: list[Path]
) -> None:
    """--control-socket NAME (and $SMSUPERVISE_CONTROL_SOCKET=NAME) is taken relative to the
    directory smsupervise was started in, not / (where it moves before binding)."""
    name = f"rel-{os.getpid()}.sock"
    for how in ("option", "variable"):
        where = Path(tempfile.mkdtemp(prefix=how, dir="/tmp"))  # AF_UNIX paths are short
        cleanup.append(where)
        args = ("--control-socket", name) if how == "option" else ()
        env = {**os.environ, **({"SMSUPERVISE_CONTROL_SOCKET": name} if how == "variable" else {})}
        run = start(*args, "sh", "-c", "echo ready; exec sleep 1000", cwd=where, env=env)
        try:
            ready = run.wait_event("control_socket_ready")
            assert ready["path"] == str(where / name)
            assert (where / name).exists()
            assert not Path("/", name).exists()
        finally:
            run.kill()
            Path("/", name).unlink(missing_ok=True)


def test_an_absolute_control_socket_is_used_as_given(
    start: Callable[..., Supervised], tmp_path: Path
) -> None:
    """The twin: an absolute path is bound where it says, and none still means no socket."""
    path = tmp_path / "abs.sock"
    run = start("--control-socket", str(path), "sh", "-c", "exec sleep 1000")
    try:
        assert run.wait_event("control_socket_ready")["path"] == str(path)
    finally:
        run.kill()
    quiet = subprocess.run(
        [PYTHON, "-m", "smsupervise", "--control-socket", "none", "true"],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert quiet.returncode == 0
    assert "control_socket_ready" not in [e["event"] for e in events(quiet.stderr)]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _low_nofile() -> None:
    """In the child before exec (inherited by unshare and smsupervise): 64 fds at most."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def _flood(path: str, count: int) -> list[socket.socket]:
    """``count`` connections that never send a request, held open (non-blocking connects: a full
    backlog is EAGAIN, not a hang)."""
    held = []
    for _ in range(count):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.setblocking(False)
        if conn.connect_ex(path) == 0:
            held.append(conn)
        else:
            conn.close()
    return held


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def test_a_connection_flood_at_rlimit_nofile_does_not_break_the_stop(
    start: Callable[..., Supervised], tmp_path: Path, cleanup: list[Path]
) -> None:
    """smsupervise with RLIMIT_NOFILE 64 and a client holding hundreds of connections to its
    control socket: it does not spin, and SIGTERM still runs the checkpoint hook, sends TERM to the
    job (which exits 0) and writes the outcome file."""
    short = Path(tempfile.mkdtemp(prefix="fl", dir="/tmp"))
    cleanup.append(short)
    sock = str(short / "c.sock")
    base = fixtures.example(tmp_path)
    job, marks = _marks_job(tmp_path)
    hook_mark = tmp_path / "hook"
    run = start(
        "--control-socket",
        sock,
        "--grace-period",
        "20",
        "--checkpoint-hook",
        f"touch {hook_mark}",
        "train",
        env=_env(base, SMSUPERVISE_TRAIN=job),
        preexec_fn=_low_nofile,
    )
    _wait_ready(run)
    held: list[socket.socket] = []
    try:
        for _ in range(10):  # connections beyond the backlog are refused now: try again as it drains
            held += _flood(sock, 100)
            if _fd_count(run.init_pid) >= 60:
                break
        before = _cpu_seconds(run.init_pid)
        time.sleep(2)  # a measuring interval: a loop spinning on EMFILE burns most of it
        spent = _cpu_seconds(run.init_pid) - before
        assert spent < 0.5, f"smsupervise used {spent:.2f} s of CPU in 2 s while the flood held on"
        run.signal(signal.SIGTERM)
        code, _, err = run.wait()
    finally:
        for conn in held:
            conn.close()
    assert code == 0, err.decode()[-3000:]
    assert hook_mark.exists()
    assert marks.read_text().split() == ["SIGTERM"]
    assert (base / "output" / "failure").read_text().startswith("Stopped by SIGTERM after ")


def test_without_a_flood_the_stop_at_a_low_rlimit_is_the_usual_one(
    start: Callable[..., Supervised], tmp_path: Path
) -> None:
    """The twin: RLIMIT_NOFILE 64 alone changes nothing: hook, TERM, outcome, with the hook's
    output framed as usual (no checkpoint_hook_output_direct)."""
    base = fixtures.example(tmp_path)
    job, marks = _marks_job(tmp_path)
    run = start(
        "--checkpoint-hook",
        "echo hook-said-this",
        "train",
        env=_env(base, SMSUPERVISE_TRAIN=job),
        preexec_fn=_low_nofile,
    )
    _wait_ready(run)
    run.signal(signal.SIGTERM)
    code, out, err = run.wait()
    assert code == 0, err.decode()[-3000:]
    assert marks.read_text().split() == ["SIGTERM"]
    names = [e["event"] for e in events(err)]
    assert "checkpoint_hook_output_direct" not in names
    assert any(orjson.loads(line).get("msg") == "hook-said-this" for line in out.splitlines())


def _short_socket(cleanup: list[Path]) -> str:
    where = Path(tempfile.mkdtemp(prefix="cs", dir="/tmp"))
    cleanup.append(where)
    return str(where / "c.sock")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _written(pid: int) -> int:
    """Bytes ``pid`` has written so far (/proc/PID/io wchar): the job's progress, as a count."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


FLOOD_JOB = """\
import os
line = b"x" * 1023 + b"\\n"
os.write(1, b"ready\\n")
while True:
    os.write(1, line * 64)
"""


def test_a_follower_that_stops_reading_holds_bounded_memory(
    start: Callable[..., Supervised], tmp_path: Path, cleanup: list[Path]
) -> None:
    """A `logs -f` client that never reads while the job floods its stdout: smsupervise's memory
    stays bounded (its RSS grows by far less than what the job wrote), and when the client reads
    again it is told how much was dropped."""
    sock = _short_socket(cleanup)
    script = tmp_path / "flood.py"
    script.write_text(FLOOD_JOB)
    run = start("--control-socket", sock, PYTHON, str(script), stdout=subprocess.PIPE)
    _wait_ready(run)
    assert run.proc.stdout is not None
    drain = threading.Thread(target=lambda: run.proc.stdout.read(), daemon=True)  # type: ignore[union-attr]
    drain.start()  # our stdout is read: only the follower is slow
    job = _job_pid(run)
    follower = socket.socket(socket.AF_UNIX)
    follower.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    follower.connect(sock)
    follower.sendall(Request("logs", {"follow": True, "lines": 0}).encode())
    try:
        baseline = _rss_kib(run.init_pid)
        start_wrote = _written(job)
        sleep_until(lambda: _written(job) - start_wrote > 400 << 20, timeout=300, what="400 MiB written")
        grown = _rss_kib(run.init_pid) - baseline
        assert grown < 100 << 10, f"smsupervise grew by {grown} KiB while the job wrote 400 MiB"
        reader = follower.makefile("rb")
        follower.settimeout(60)
        dropped = sleep_until(
            lambda: orjson.loads(reader.readline()).get("item", {}).get("dropped_bytes"),
            timeout=120,
            what="the dropped-bytes notice",
        )
        assert dropped > 0
    finally:
        follower.close()
        run.kill()


def test_a_connect_close_loop_does_not_cut_the_relay(
    start: Callable[..., Supervised], tmp_path: Path, cleanup: list[Path]
) -> None:
    """While other processes connect and close in a loop, every line the job writes is relayed,
    in order, and the socket still answers; the loop ran throughout (its count is checked)."""
    sock = _short_socket(cleanup)
    count = 100_000
    script = tmp_path / "count.py"
    script.write_text(
        "import os, sys\n"
        "sys.stdin.readline()\n"
        f"for i in range({count}):\n"
        "    sys.stdout.write(f'line {i}\\n')\n"
        "sys.stdout.flush()\n"
    )
    run = start("--control-socket", sock, PYTHON, str(script), stdin=subprocess.PIPE)
    sleep_until(lambda: Path(sock).exists(), what="the control socket")
    stop = threading.Event()
    made = [0]

    def loop() -> None:
        while not stop.is_set():
            with socket.socket(socket.AF_UNIX) as conn:
                if conn.connect_ex(sock) == 0:
                    made[0] += 1

    loopers = [threading.Thread(target=loop, daemon=True) for _ in range(2)]
    for looper in loopers:
        looper.start()
    try:
        sleep_until(lambda: made[0] > 500, what="the loop to run")
        assert run.proc.stdin is not None
        run.proc.stdin.write(b"go\n")
        run.proc.stdin.flush()
        assert run.proc.stdout is not None
        seen = 0
        for line in run.proc.stdout:
            if orjson.loads(line).get("msg") == f"line {seen}":
                seen += 1
                if seen == count:
                    break
        during = made[0]
    finally:
        stop.set()
        for looper in loopers:
            looper.join(30)
    assert seen == count
    assert during > 1000  # the loop ran while the lines went through
    code, _, err = run.wait()
    assert code == 0, err.decode()[-2000:]


def _wait_any(run: Supervised, *names: str) -> dict[str, Any]:
    """The first of the events ``names`` smsupervise logs from now on (its stderr, read here)."""
    assert run.proc.stderr is not None
    while True:
        line = run.proc.stderr.readline()
        assert line, f"smsupervise exited before logging any of {names}"
        run._err += line
        for record in events(line):
            if record["event"] in names:
                return record


def test_a_stop_adopts_the_checkpoint_hook_already_running(
    start: Callable[..., Supervised], tmp_path: Path, cleanup: list[Path]
) -> None:
    """`smsupervise-debug checkpoint` is running the hook when SIGTERM arrives: the stop waits for
    that hook (checkpoint_hook_adopted) instead of starting a second writer of the same
    checkpoint; when it ends, TERM goes to the job."""
    sock = _short_socket(cleanup)
    log, go = tmp_path / "hook.log", tmp_path / "go"
    hook = f"sh -c 'echo start >> {log}; while [ ! -e {go} ]; do sleep 0.02; done; echo end >> {log}'"
    base = fixtures.example(tmp_path)
    job, marks = _marks_job(tmp_path)
    run = start(
        "--control-socket", sock, "--checkpoint-hook", hook, "train", env=_env(base, SMSUPERVISE_TRAIN=job)
    )
    _wait_ready(run)
    asked = subprocess.Popen(
        [PYTHON, "-m", "smsupervise.debug", "--socket", sock, "checkpoint"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "supervisor")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        sleep_until(lambda: log.exists() and log.read_text() == "start\n", what="the on-demand hook")
        run.signal(signal.SIGTERM)
        run.wait_event("stop_requested")
        adopted = _wait_any(run, "checkpoint_hook_adopted", "checkpoint_hook_started")
        go.touch()
        code, _, err = run.wait()
        _, said = asked.communicate(timeout=60)
    finally:
        if asked.poll() is None:
            asked.kill()
    assert code == 0, err.decode()[-3000:]
    assert log.read_text() == "start\nend\n"  # one hook, not two
    names = [e["event"] for e in events(err)]
    stop_at = names.index("stop_requested")
    assert names.index("checkpoint_hook_started") < stop_at  # the on-demand one
    assert "checkpoint_hook_started" not in names[stop_at:]  # the stop started none
    done = next(e for e in events(err) if e["event"] == "checkpoint_done")
    assert done["how"] == "hook exited"
    assert marks.read_text().split() == ["SIGTERM"]
    assert adopted["event"] == "checkpoint_hook_adopted"
    assert asked.returncode == 0, said


def test_a_finished_on_demand_checkpoint_is_not_adopted(
    start: Callable[..., Supervised], tmp_path: Path, cleanup: list[Path]
) -> None:
    """The twin: an on-demand checkpoint that already ended is history; SIGTERM starts the stop's
    own hook as usual."""
    sock = _short_socket(cleanup)
    log = tmp_path / "hook.log"
    base = fixtures.example(tmp_path)
    job, _ = _marks_job(tmp_path)
    run = start(
        "--control-socket",
        sock,
        "--checkpoint-hook",
        f"sh -c 'echo run >> {log}'",
        "train",
        env=_env(base, SMSUPERVISE_TRAIN=job),
    )
    _wait_ready(run)
    asked = subprocess.run(
        [PYTHON, "-m", "smsupervise.debug", "--socket", sock, "checkpoint"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "supervisor")},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert asked.returncode == 0, asked.stderr
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 0, err.decode()[-3000:]
    assert log.read_text() == "run\nrun\n"
    names = [e["event"] for e in events(err)]
    assert "checkpoint_hook_adopted" not in names
    assert names.count("checkpoint_hook_started") == 2


def _first_free_fd(pid: int) -> int:
    """The lowest fd number ``pid`` does not have open: with RLIMIT_NOFILE set to it, the process
    cannot open a single new fd (it keeps those it has)."""
    taken = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    return next(n for n in range(len(taken) + 1) if n not in taken)


def _reserve_fds(pid: int) -> list[int]:
    """The fds of ``pid`` open on /dev/null above 2: smsupervise's fd reserve."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if int(fd) > 2 and os.readlink(f"/proc/{pid}/fd/{fd}") == os.devnull:
                found.append(int(fd))
    return sorted(found)


def test_at_rlimit_nofile_the_stop_uses_its_reserve(start: Callable[..., Supervised], tmp_path: Path) -> None:
    """RLIMIT_NOFILE lowered under a running smsupervise (prlimit) so that no new fd can be
    opened: SIGTERM still starts the hook with its output framed (the reserve gives the pipes
    back for the spawn), TERM reaches the job, and the outcome file is written."""
    base = fixtures.example(tmp_path)
    job, marks = _marks_job(tmp_path)
    run = start(
        "--control-socket",
        "none",  # its bind closes fds after the reserve is taken: holes below it
        "--checkpoint-hook",
        "echo hook-said-this",
        "train",
        env=_env(base, SMSUPERVISE_TRAIN=job),
    )
    _wait_ready(run)
    limit = _first_free_fd(run.init_pid)
    assert limit > _reserve_fds(run.init_pid)[-1]  # a real exhaustion: the reserve is below the limit
    resource.prlimit(run.init_pid, resource.RLIMIT_NOFILE, (limit, limit))
    run.signal(signal.SIGTERM)
    code, out, err = run.wait()
    assert code == 0, err.decode()[-3000:]
    assert marks.read_text().split() == ["SIGTERM"]
    assert any(orjson.loads(line).get("msg") == "hook-said-this" for line in out.splitlines()), err.decode()
    assert (base / "output" / "failure").read_text().startswith("Stopped by SIGTERM after ")


def test_with_too_few_fds_for_the_hooks_pipes_the_stop_degrades(
    start: Callable[..., Supervised], tmp_path: Path
) -> None:
    """RLIMIT_NOFILE lowered so that the reserve gives back 3 fds, not the 4 the hook's two pipes
    take: the hook still runs, its output going to ours unframed (checkpoint_hook_output_direct,
    with the error), TERM reaches the job, which exits 0, and the outcome file is written."""
    base = fixtures.example(tmp_path)
    job, marks = _marks_job(tmp_path)
    hook_mark = tmp_path / "hook"
    run = start(
        "--control-socket",
        "none",
        "--checkpoint-hook",
        f"touch {hook_mark}",
        "train",
        env=_env(base, SMSUPERVISE_TRAIN=job),
    )
    _wait_ready(run)
    reserve = _reserve_fds(run.init_pid)
    assert len(reserve) >= 4
    assert _first_free_fd(run.init_pid) > reserve[0]  # below the reserve, every fd is taken
    limit = reserve[0] + 3
    resource.prlimit(run.init_pid, resource.RLIMIT_NOFILE, (limit, limit))
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 0, err.decode()[-3000:]
    assert hook_mark.exists()
    assert marks.read_text().split() == ["SIGTERM"]
    direct = next(e for e in events(err) if e["event"] == "checkpoint_hook_output_direct")
    assert "Too many open files" in direct["error"]
    assert (base / "output" / "failure").read_text().startswith("Stopped by SIGTERM after ")


def test_exec_without_fds_for_its_pipes_is_refused_in_words(
    start: Callable[..., Supervised], tmp_path: Path, cleanup: list[Path]
) -> None:
    """At RLIMIT_NOFILE with one fd left (for the connection), `exec` cannot make its pipes: the
    client is told so, and no traceback reaches the event stream; once fds are back, exec works."""
    sock = _short_socket(cleanup)
    run = start("--control-socket", sock, "sh", "-c", "echo ready; exec sleep 1000")
    _wait_ready(run)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "supervisor")}
    client = [PYTHON, "-m", "smsupervise.debug", "--socket", sock]
    warm = subprocess.run([*client, "status"], env=env, capture_output=True, timeout=60, check=False)
    assert warm.returncode == 0, warm.stderr  # the server is imported and serving
    limit = _first_free_fd(run.init_pid) + 1
    soft, hard = resource.prlimit(run.init_pid, resource.RLIMIT_NOFILE)
    resource.prlimit(run.init_pid, resource.RLIMIT_NOFILE, (limit, hard))
    done = subprocess.run(
        [*client, "exec", "--", "true"], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert b"cannot start it now: Too many open files" in done.stderr
    resource.prlimit(run.init_pid, resource.RLIMIT_NOFILE, (soft, hard))
    again = subprocess.run(
        [*client, "exec", "--", "true"], env=env, capture_output=True, timeout=60, check=False
    )
    assert again.returncode == 0, again.stderr
    run.signal(signal.SIGTERM)
    _, _, err = run.wait()
    assert b"Traceback" not in err
