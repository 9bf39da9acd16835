"""The example image run as users run it: `podman run IMAGE train`, commands, signals, zombies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import sleep_until
from tests.container.conftest import TESTS
from tests.container.podman import MlTree, Podman

PYTHON_EXIT = "import sys; sys.exit(3)"
PYTHON_KILLED = "import os; os.kill(os.getpid(), 9)"


def test_train_writes_success_and_model(podman: Podman, image: str, tmp_path: Path) -> None:
    """`podman run IMAGE train` with /opt/ml mounted trains the baked-in script to success."""
    ml = MlTree(tmp_path / "ml", {"epochs": "3"})
    result = podman.run(image, "train", options=ml.mounts())
    assert result.code == 0, result.err.decode()
    spawned = next(e for e in result.events() if e["event"] == "child_spawned")
    assert spawned["step"] == "training"
    assert spawned["argv"] == ["/usr/bin/python3", "--", "train.py", "--epochs", "3"]
    assert spawned["cwd"] == "/opt/ml/code"
    assert [e["exit_code"] for e in result.events() if e["event"] == "exiting"] == [0]
    assert (ml.path / "output" / "success").exists()
    assert not (ml.path / "output" / "failure").exists()
    model = json.loads(ml.read("model/model.json"))
    assert len(model["losses"]) == 3
    assert any("model saved to /opt/ml/model" in r.get("msg", "") for r in result.records("stderr"))


def test_train_failure_file_on_host(podman: Podman, image: str, tmp_path: Path) -> None:
    """A job that raises leaves its exit code and a failure file naming the exception on the host."""
    ml = MlTree(tmp_path / "ml", {"epochs": "3", "fail-at-epoch": "1"})
    result = podman.run(image, "train", options=ml.mounts())
    assert result.code == 1
    failure = ml.read("output/failure")
    assert failure.startswith("Training exited with code 1.")
    assert "RuntimeError: loss diverged at epoch 1" in failure
    assert not (ml.path / "output" / "success").exists()


def test_smsupervise_is_pid_1(podman: Podman, image: str) -> None:
    """smsupervise is the container's PID 1 and the job is its child."""
    probe = "import os; print(os.getppid(), open('/proc/1/cmdline').read().split(chr(0))[1])"
    result = podman.run(image, "python3", "-c", probe)
    assert result.code == 0, result.err.decode()
    assert [r["msg"] for r in result.records()] == ["1 /usr/local/bin/smsupervise"]


@pytest.mark.parametrize(
    ("command", "code", "event"),
    [
        pytest.param(["python3", "-c", PYTHON_EXIT], 3, "child_exited", id="exit-3"),
        pytest.param(["python3", "-c", PYTHON_KILLED], 137, "child_exited", id="sigkill"),
        pytest.param(["true"], 0, "child_exited", id="true"),
        pytest.param(["no-such-program"], 127, "start_failed", id="missing-127"),
        pytest.param(["/etc/hostname"], 126, "start_failed", id="not-executable-126"),
    ],
)
def test_command_exit_codes(podman: Podman, image: str, command: list[str], code: int, event: str) -> None:
    """`podman run IMAGE CMD` exits with the command's own code, 128+N for a signal, 126/127 to start."""
    result = podman.run(image, *command)
    assert result.code == code, result.err.decode()
    assert event in [e["event"] for e in result.events()]
    if code == 127:
        failed = next(e for e in result.events() if e["event"] == "start_failed")
        assert "no-such-program: command not found on PATH=" in failed["error"]


def test_usr1_reaches_the_job(podman: Podman, image: str) -> None:
    """`podman kill --signal USR1` is forwarded to the job; `podman stop` then ends it with SIGTERM."""
    job = podman.start(image, "python3", "/tests/container/jobs/signals.py", options=TESTS)
    job.wait_for_line('"msg":"ready"', stream="stdout")
    podman.kill(job.name, "USR1")
    job.wait_for_line('"msg":"got SIGUSR1"', stream="stdout")
    job.wait_for_event("signal_forwarded", signal="SIGUSR1")
    podman.stop(job.name, 30)
    assert job.wait() == 143  # the job's default SIGTERM action
    assert job.wait_for_event("child_exited")["signal"] == "SIGTERM"


def test_orphans_are_reaped(podman: Podman, image: str) -> None:
    """Orphaned grandchildren are reaped by smsupervise as PID 1: no zombies remain."""
    result = podman.run(image, "python3", "/tests/helpers/spawn_orphans.py", "50", "10", options=TESTS)
    assert result.code == 0, result.out.decode()
    assert [r["msg"] for r in result.records()] == ["orphans: 50 made, 0 zombies"]


def test_orphans_stay_zombies_without_smsupervise(podman: Podman, image: str) -> None:
    """Negative twin: with python3 as PID 1 (no smsupervise) the same orphans stay zombies."""
    options = [*TESTS, "--entrypoint", "python3"]
    result = podman.run(image, "/tests/helpers/spawn_orphans.py", "50", "2", options=options)
    assert result.code == 1
    assert result.out.decode().strip() == "orphans: 50 made, 50 zombies left"


def test_interactive_bash_reads_the_terminal(podman: Podman, image: str) -> None:
    """`podman run -it IMAGE bash` on a real pty: bash gets the terminal (a prompt, its output not
    re-framed as JSON, job control, Ctrl-C for the foreground command only), `exit 4` gives 4."""
    name = podman.name("pty")
    shell = podman.pty("run", "-it", "--rm", "--network", "none", "--name", name, image, "bash")
    shell.expect('"event":"child_spawned".*"argv":\\["bash"\\]')
    shell.expect(r"root@\w+:/# ")  # the prompt of an interactive shell that owns the terminal
    shell.send(b"echo hi-$((1+1))\n")
    shell.expect(r"[\r\n]hi-2\r\n")  # raw, as a shell prints it: not a JSON record
    shell.send(b"sleep 300 & jobs\n")  # job control: bash runs it as a background job
    shell.expect(r"\[1\]\+ +Running +sleep 300 &")
    shell.send(b"kill %1; wait; echo killed-$((3+4))\n")  # the job, by its job-control name
    shell.expect(r"[\r\n]killed-7\r\n")
    shell.send(b"sleep 301\n")
    shell.expect(r"sleep 301\r\n")
    # Ctrl-C only once `sleep 301` runs (bash gave it the terminal before exec'ing it): before that
    # bash itself is in the foreground and an interactive bash ignores SIGINT.
    sleep_until(lambda: podman.exec(name, "pgrep", "-x", "-f", "sleep 301").code == 0, what="sleep 301")
    shell.send(b"\x03")  # Ctrl-C interrupts the foreground command, not the container
    shell.send(b"echo back-$((2+1))\n")
    shell.expect(r"[\r\n]back-3\r\n")
    shell.send(b"exit 4\n")
    assert shell.close() == 4
