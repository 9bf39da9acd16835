"""The PID-1 core, black-box: exit codes, forwarding, reaping, stopping, leftovers, fds.

Every test that can differ runs twice: smsupervise as a subreaper, and as PID 1 of a fresh PID
namespace. What the spawn gives the child (fds, dispositions, session) is the same code in both modes
and runs once, as a subreaper. The sweep over every exit code is pure (tests/unit/core/test_status.py);
here a dozen codes go end to end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from tests.conftest import PYTHON, event_names, events, helper, sleep_until, supervisor_argv

QUIET = ("--log-level", "warning")
SPAWN_MODE = "subreaper"  # what spawn gives the child does not depend on being PID 1: tested once


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=timeout, check=False)


END_TO_END_CODES = [0, 1, 2, 3, 125, 126, 127, 128, 129, 130, 137, 143, 255]


def test_exit_codes_pass_through(mode: str) -> None:
    """smsupervise exits with the child's exit code: the shell's special codes and the edges, end to
    end (every code 0..255 is swept on the decoding itself, in tests/unit/core/test_status.py)."""

    def code_of(code: int) -> int:
        return _run(supervisor_argv(mode, *QUIET, "sh", "-c", f"exit {code}")).returncode

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(code_of, END_TO_END_CODES))
    assert got == END_TO_END_CODES


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGKILL,
        signal.SIGUSR1,
        signal.SIGSEGV,
        signal.SIGABRT,
    ],
)
def test_signal_death_gives_128_plus_n(mode: str, signum: int) -> None:
    """A child killed by signal N makes smsupervise exit 128+N, and the event names the signal."""
    result = _run(supervisor_argv(mode, PYTHON, "-c", f"import os; os.kill(os.getpid(), {int(signum)})"))
    assert result.returncode == 128 + signum
    exited = [e for e in events(result.stderr) if e["event"] == "child_exited"]
    assert exited[0]["signal"] == signal.Signals(signum).name


def test_missing_program_exits_127_with_message(mode: str) -> None:
    """A program that is not on PATH gives 127 and a message naming it and the PATH searched."""
    result = _run(supervisor_argv(mode, "no-such-program-xyz"))
    assert result.returncode == 127
    failure = [e for e in events(result.stderr) if e["event"] == "start_failed"]
    assert "no-such-program-xyz: command not found on PATH=" in failure[0]["error"]


def test_not_executable_exits_126_with_fix(mode: str, tmp_path: Path) -> None:
    """A program that exists but is not executable gives 126 and says how to fix it."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    result = _run(supervisor_argv(mode, str(script)))
    assert result.returncode == 126
    assert f"chmod +x {script}" in events(result.stderr)[-2]["error"]
    script.chmod(0o755)  # the negative twin: once executable, it runs
    assert _run(supervisor_argv(mode, str(script))).returncode == 0


def _forwardable() -> list[int]:
    skip = {
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGCHLD,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGPIPE,  # about our own writes: ignored, never forwarded (test_hardening.py)
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGTRAP,
        signal.SIGSYS,
        signal.SIGABRT,
        signal.SIGTSTP,
    }
    return sorted(int(s) for s in signal.valid_signals() if s not in skip and s not in (32, 33))


def test_every_forwardable_signal_reaches_a_grandchild_behind_sh(mode: str, start, tmp_path: Path) -> None:
    """Each forwardable signal (real-time ones too) sent to smsupervise reaches a grandchild
    behind `sh -c` (the process group is signalled), and SIGTERM last stops it cleanly."""
    record = tmp_path / "signals"
    signals = _forwardable()
    # sh traps every signal with a no-op so it survives; trapped signals are default in its child.
    traps = " ".join(str(s) for s in signals)
    script = (
        f"trap : {traps}; {PYTHON} {helper('print_signals.py')} {record} & child=$!; "
        "while kill -0 $child 2>/dev/null; do wait $child; done"
    )
    run = start("sh", "-c", script)
    sleep_until(lambda: record.exists() and "ready" in record.read_text(), what="print_signals ready")
    for signum in signals:
        run.signal(signum)
        sleep_until(
            lambda s=signum: str(s) in record.read_text().split(),
            timeout=5,
            what=f"signal {signum} at the grandchild",
        )
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 143  # sh itself does not trap TERM: the group signal killed it too
    got = [int(x) for x in record.read_text().split() if x.isdigit()]
    assert got == [*signals, int(signal.SIGTERM)]
    forwarded = [e for e in events(err) if e["event"] == "signal_forwarded"]
    assert len(forwarded) == len(signals) + 1


def test_forward_to_child_only_spares_the_group(mode: str, start, tmp_path: Path) -> None:
    """With --forward-to child, forwarded signals reach the child (sh) but not the rest of its
    group; the grandchild only gets the leftover SIGTERM once sh has exited."""
    record = tmp_path / "signals"
    script = (
        f"trap 'echo usr1 >> {tmp_path}/sh' USR1; {PYTHON} {helper('print_signals.py')} {record} & "
        "c=$!; while kill -0 $c 2>/dev/null; do wait $c; done"
    )
    run = start("--forward-to", "child", "sh", "-c", script)
    sleep_until(lambda: record.exists() and "ready" in record.read_text(), what="ready")
    run.signal(signal.SIGUSR1)
    sleep_until(lambda: (tmp_path / "sh").exists(), what="sh got USR1")
    run.signal(signal.SIGTERM)  # to sh only: it does not trap TERM, so it dies of it
    code, _, err = run.wait()
    assert code == 143
    assert record.read_text().split() == ["ready", str(int(signal.SIGTERM))]
    assert "leftovers_terminated" in event_names(err)


def test_thousand_orphans_leave_no_zombie(mode: str) -> None:
    """1000 orphans re-parented to smsupervise are all reaped while the child is still running."""
    result = _run(supervisor_argv(mode, *QUIET, PYTHON, helper("spawn_orphans.py"), "1000", "20"))
    assert result.returncode == 0, result.stdout
    assert b"1000 made, 0 zombies" in result.stdout


@pytest.mark.pid1
def test_negative_twin_plain_sh_as_pid1_leaves_zombies(tmp_path: Path) -> None:
    """The orphan check can fail: a plain sh as PID 1, busy reading its input, reaps nothing."""
    from tests.conftest import UNSHARE_PROBLEM

    if UNSHARE_PROBLEM:
        pytest.skip(UNSHARE_PROBLEM)
    out = tmp_path / "out"
    script = f"{PYTHON} {helper('spawn_orphans.py')} 100 0.5 > {out} & read line; wait"
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script], stdin=subprocess.PIPE
    )
    try:
        sleep_until(lambda: out.exists() and out.read_text(), what="the orphan report")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    assert "100 zombies left" in out.read_text()


def _sigterm_at_start(mode: str) -> int:
    """Start smsupervise, send SIGTERM the moment its handler is installed, return its exit code."""
    from tests.conftest import Supervised

    run = Supervised(
        mode,
        supervisor_argv(mode, *QUIET, "sleep", "30"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Stop polling as soon as the handler is there or the init is gone (report its code then).
        sleep_until(
            lambda: run.catching(signal.SIGTERM) or run.proc.poll() is not None,
            interval=0.0,
            what="the SIGTERM handler",
        )
        if run.proc.poll() is not None:
            return run.proc.returncode
        os.kill(run.init_pid, signal.SIGTERM)
        return run.proc.wait(timeout=60)
    finally:
        if run.proc.poll() is None:
            run.kill()


@pytest.mark.parametrize(
    "times", [pytest.param(20, id="20"), pytest.param(100, id="100", marks=pytest.mark.slow)]
)
def test_sigterm_at_the_moment_of_start_is_never_lost(mode: str, times: int) -> None:
    """A SIGTERM sent as soon as smsupervise can catch it always stops the run (20 times; 100 in the
    slow run): either before the child exists (not started, 143) or forwarded to it (143)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        codes = list(pool.map(lambda _: _sigterm_at_start(mode), range(times)))
    assert set(codes) == {143}, {c: codes.count(c) for c in set(codes)}


def test_main_child_exiting_at_once_with_grandchildren_exiting_too(mode: str) -> None:
    """catatonit#4: a main child that exits at once while grandchildren die too never hangs us."""
    script = "bash -c 'sleep 0.01 & kill -9 $BASHPID'; sleep 0.0087"
    for _ in range(30):
        result = _run(supervisor_argv(mode, *QUIET, "bash", "-c", script), timeout=30)
        assert result.returncode == 0


def test_leftovers_get_term_then_kill_after_the_grace(mode: str, start, tmp_path: Path) -> None:
    """When the main child exits, the rest of its group gets SIGTERM; one that ignores it is
    SIGKILLed once --leftover-grace has passed; then smsupervise exits with the child's code."""
    record = tmp_path / "signals"
    stubborn = tmp_path / "stubborn.pid"
    ignore = (
        "import os,signal,time; signal.signal(15, signal.SIG_IGN); "
        f"open('{stubborn}','w').write(str(os.getpid())); time.sleep(60)"
    )
    script = (
        f'{PYTHON} {helper("print_signals.py")} {record} & {PYTHON} -c "{ignore}" & '
        f"while [ ! -s {stubborn} ] || ! grep -q ready {record} 2>/dev/null; do sleep 0.01; done; "
        "exit 5"
    )
    run = start("--leftover-grace", "1", "sh", "-c", script)
    code, _, err = run.wait()
    assert code == 5
    assert record.read_text().split()[-1] == str(int(signal.SIGTERM))
    names = event_names(err)
    assert names.index("child_exited") < names.index("leftovers_terminated") < names.index("leftovers_killed")
    terminated = next(e for e in events(err) if e["event"] == "leftovers_terminated")
    assert terminated["leftover_grace"] == 1
    killed = next(e for e in events(err) if e["event"] == "leftovers_killed")
    assert int(stubborn.read_text()) in killed["pids"]  # its pid as seen by smsupervise, in either mode
    assert _processes_mentioning(str(stubborn)) == []  # gone, in either mode (pids differ inside)


def test_child_has_only_stdio_fds() -> None:
    """The child inherits fds 0, 1 and 2 and nothing of smsupervise's own (pidfd, pipes, sockets)."""
    code = "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))"
    result = _run(supervisor_argv(SPAWN_MODE, *QUIET, "--log-format", "raw", PYTHON, "-c", code))
    assert result.returncode == 0
    fds = eval(result.stdout.decode().strip().splitlines()[-1])  # noqa: S307 (our own child's output)
    assert fds == [0, 1, 2, 3]  # 3 is listdir's own handle on /proc/self/fd


def test_child_starts_with_default_dispositions_and_empty_mask() -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and the test runner may ignore more: the child gets
    none of that (SigIgn and SigBlk are 0)."""
    result = _run(
        supervisor_argv(
            SPAWN_MODE, *QUIET, "--log-format", "raw", "grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"
        )
    )
    lines = dict(line.split(":\t") for line in result.stdout.decode().splitlines())
    # glibc's posix_spawn marks its own internal signals 32 and 33 (SIGCANCEL, SIGSETXID) SIG_IGN
    # in the child; the new program's libc re-installs them at start-up. Nothing else is ignored.
    glibc_internal = (1 << 31) | (1 << 32)
    assert int(lines["SigIgn"], 16) & ~glibc_internal == 0
    assert int(lines["SigBlk"], 16) == 0


def test_child_gets_its_own_session_and_group() -> None:
    """The child is a session and process-group leader (so a group signal reaches all it starts)."""
    code = "import os; print(os.getpid() == os.getpgid(0) == os.getsid(0))"
    result = _run(supervisor_argv(SPAWN_MODE, *QUIET, "--log-format", "raw", PYTHON, "-c", code))
    assert result.stdout.strip() == b"True"


def test_stop_sequence_kills_a_child_that_ignores_term(mode: str, start) -> None:
    """SIGTERM is forwarded; a child that ignores it is SIGKILLed after --grace-period (exit 137)."""
    code = "import signal,time; signal.signal(15, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    run = start("--grace-period", "0.5", PYTHON, "-c", code)
    assert run.proc.stdout is not None
    assert b"ready" in run.proc.stdout.readline()
    run.signal(signal.SIGTERM)
    rc, _, err = run.wait()
    assert rc == 137
    names = event_names(err)
    assert names.index("stop_requested") < names.index("grace_expired") < names.index("child_exited")


def test_second_sigterm_skips_the_rest_of_the_grace(mode: str, start) -> None:
    """A second SIGTERM during the grace period moves straight on to SIGKILL."""
    code = "import signal,time; signal.signal(15, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    run = start("--grace-period", "100", PYTHON, "-c", code)
    assert run.proc.stdout is not None
    assert b"ready" in run.proc.stdout.readline()
    run.signal(signal.SIGTERM)
    run.wait_event("signal_forwarded")  # the first TERM has reached the child: the grace runs
    run.signal(signal.SIGTERM)
    rc, _, err = run.wait(timeout=20)
    assert rc == 137
    names = event_names(err)
    assert names.index("signal_forwarded") < names.index("stop_advanced") < names.index("child_exited")
    assert "grace_expired" not in names
    exiting = next(e for e in events(err) if e["event"] == "exiting")
    assert "SIGKILLed on a second stop signal before its 100 s grace period ended" in exiting["stop"]


def test_same_behaviour_under_both_event_loops(mode: str) -> None:
    """The supervisor works the same under uvloop and the stdlib loop (nothing uvloop-only): the
    same exit code, the same output records and the same sequence of events."""
    script = "for i in range(200): print(i)\nimport sys; print('bye', file=sys.stderr); sys.exit(3)"
    seen = {}
    for loop in ("uvloop", "asyncio"):
        result = subprocess.run(
            supervisor_argv(mode, "--event-loop", loop, PYTHON, "-c", script),
            capture_output=True,
            timeout=60,
            check=False,
        )
        records = [orjson.loads(line)["msg"] for line in result.stdout.splitlines()]
        seen[loop] = (
            result.returncode,
            records,
            [n for n in event_names(result.stderr) if n != "subreaper_enabled"],
        )
    assert seen["uvloop"] == seen["asyncio"]
    assert seen["uvloop"][0] == 3
    assert seen["uvloop"][1] == [str(i) for i in range(200)]


def _processes_mentioning(token: str) -> list[int]:
    """Pids of live processes whose command line contains ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found
