"""``inspect`` against what ``train`` then really runs: the running child's argv, cwd and
/proc/<pid>/environ, for script mode, bring-your-own-container, a ``--`` command, and a failing
configuration (the same error text as train, exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from smsupervise.linux.proctree import descendants
from tests.conftest import PYTHON, Supervised, events, helper, sleep_until
from tests.debug.conftest import CLIENT_ENV


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory for the job tree and the socket (other processes may enter it)."""
    path = Path(tempfile.mkdtemp(prefix="smsupervise-inspect-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _inspect(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "smsupervise.debug", "--json", "inspect", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=cwd,
    )


def _running(run: Supervised) -> tuple[list[str], str, dict[str, str]]:
    """The main child's argv (as spawned), cwd and environment, read from the live process."""
    assert run.proc.stdout is not None
    for line in run.proc.stdout:  # the job says ready (a JSON record)
        if orjson.loads(line).get("msg") == "ready":
            break
    pid = sleep_until(lambda: descendants(run.init_pid)[:1], what="the job")[0]
    spawned = next(e for e in events(_stderr_so_far(run)) if e["event"] == "child_spawned")
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    environ = dict(entry.split("=", 1) for entry in raw.decode().split("\0") if entry)
    return spawned["argv"], os.readlink(f"/proc/{pid}/cwd"), environ


def _stderr_so_far(run: Supervised) -> bytes:
    """The supervisor's events up to now: read its stderr until child_spawned went by."""
    assert run.proc.stderr is not None
    seen = b""
    while b'"child_spawned"' not in seen:
        line = run.proc.stderr.readline()
        assert line, "the supervisor ended before spawning"
        seen += line
    return seen


def _compare(
    start: Callable[..., Supervised], args: list[str], env: dict[str, str], cwd: Path
) -> dict[str, Any]:
    """Run inspect, then train for real with the same arguments, and compare."""
    done = _inspect(args, env, cwd)
    assert done.returncode == 0, done.stderr
    main = orjson.loads(done.stdout)["steps"][-1]
    run = start(*args, env=env, cwd=str(cwd))
    argv, real_cwd, environ = _running(run)
    assert main["argv"] == argv
    assert main["cwd"] == real_cwd
    assert {key: item["value"] for key, item in main["env"].items()} == environ
    run.kill()
    return main


def test_inspect_equals_a_command(start: Callable[..., Supervised], place: Path) -> None:
    """A `--` command: argv, cwd and the whole environment are what smsupervise then runs."""
    args = ["--control-socket", str(place / "c.sock"), "--", PYTHON, helper("debug_job.py")]
    main = _compare(start, args, {**CLIENT_ENV, "MY_VAR": "1"}, place)
    assert main["env"]["MY_VAR"]["source"] == "inherited"
    assert main["env"]["SMSUPERVISE_DEBUG_SOCKET"]["source"] == "smsupervise: the control socket"


def test_inspect_equals_bring_your_own_container(start: Callable[..., Supervised], place: Path) -> None:
    """`train` on PATH (BYOC): the program found and its environment, with the SM_* variables."""
    bindir = place / "bin"
    bindir.mkdir()
    program = bindir / "train"
    program.write_text(f"#!{PYTHON}\n" + Path(helper("debug_job.py")).read_text())  # no shell: env as given
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    (place / "ml" / "input" / "config").mkdir(parents=True)
    env = {**CLIENT_ENV, "PATH": f"{bindir}:{os.environ['PATH']}", "SAGEMAKER_BASE_DIR": str(place / "ml")}
    main = _compare(start, ["--control-socket", str(place / "c.sock"), "train"], env, place)
    assert main["argv"] == [str(program)]
    assert main["env"]["SM_HOSTS"]["source"] == "smsupervise"


def test_inspect_equals_script_mode(start: Callable[..., Supervised], place: Path) -> None:
    """Script mode: python3 -- train.py with the hyperparameters as arguments, in <base>/code."""
    base = place / "ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "code").mkdir()
    shutil.copy(helper("debug_job.py"), base / "code" / "train.py")
    hps = {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": json.dumps(str(base / "code"))}
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps({**hps, "print": "2"}))
    env = {**CLIENT_ENV, "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_PYTHON": PYTHON}
    main = _compare(start, ["--control-socket", str(place / "c.sock"), "train"], env, place)
    assert main["argv"][-2:] == ["--print", "2"]
    assert main["cwd"] == str(base / "code")


def test_a_failing_config_is_reported_as_train_reports_it(place: Path) -> None:
    """Malformed hyperparameters: inspect exits 2 with train's error text, word for word."""
    base = place / "ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text("{not json")
    env = {**CLIENT_ENV, "SAGEMAKER_BASE_DIR": str(base)}
    inspected = _inspect(["--control-socket", "none", "train"], env, place)
    assert sorted(os.listdir(base)) == ["input"]  # inspect wrote nothing
    trained = subprocess.run(
        [PYTHON, "-m", "smsupervise", "--control-socket", "none", "train"],
        capture_output=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert inspected.returncode == trained.returncode == 2
    error = next(e for e in events(trained.stderr) if e["event"] == "start_failed")["error"]
    assert "is not valid JSON" in error
    assert inspected.stderr == f"smsupervise-debug inspect: {error}\n"
