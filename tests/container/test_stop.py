"""`podman stop` as SageMaker stops a job: SIGTERM to PID 1, SIGKILL at the timeout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import sleep_until
from tests.container.conftest import TESTS
from tests.container.podman import MlTree, Podman

HOOK = (
    'SMSUPERVISE_CHECKPOINT_HOOK=sh -c "echo $SMSUPERVISE_STOP_REASON > $SMSUPERVISE_CHECKPOINT_DIR/hook.txt"'
)
HARDENED = ["--read-only", "--user", "1000:1000", "--cap-drop", "ALL"]
LONG_RUN = {"epochs": "100000", "step-seconds": "0.005"}
SLEEPER = "import time; print('ready', flush=True); time.sleep(600)"


def started_training(ml: MlTree) -> None:
    """Wait until the job has written 3 checkpoints: it is training for real."""
    sleep_until(lambda: len(ml.checkpoints()) >= 3, timeout=120, what="3 checkpoints")


@pytest.mark.parametrize("options", [pytest.param([], id="default"), pytest.param(HARDENED, id="hardened")])
def test_stop_checkpoints_then_resume(podman: Podman, image: str, tmp_path: Path, options: list[str]) -> None:
    """`podman stop -t 120` runs the hook, the job saves and exits 0; the next run resumes from it."""
    ml = MlTree(tmp_path / "ml", LONG_RUN)
    if options:
        ml.chown(1000, 1000)
    job = podman.start(image, "train", options=[*ml.mounts(), "--env", HOOK, *options])
    started_training(ml)
    # The debug mode's control socket works in the same container (read-only root: it falls back
    # to a writable place), for the job's own user.
    ready = job.wait_for_event("control_socket_ready")
    status = podman.exec(job.name, "smsupervise-debug", "--json", "--socket", ready["path"], "status")
    assert status.code == 0, status.err.decode()
    assert json.loads(status.out)["mode"] == "train"
    podman.stop(job.name, 120)
    assert job.wait() == 0, job.output()  # the job's own exit code: it saved and exited 0
    names = [e["event"] for e in job.events()]
    assert names.index("checkpoint_done") < names.index("child_exited")
    assert job.wait_for_event("stop_requested")["reason"] == "SIGTERM"
    done = job.wait_for_event("checkpoint_done")
    assert (done["how"], done["hook_exit_code"]) == ("hook exited", 0)
    assert job.wait_for_event("signal_forwarded", signal="SIGTERM")
    assert ml.read("checkpoints/hook.txt") == "SIGTERM\n"
    assert ml.read("output/failure").startswith("Stopped by SIGTERM after ")
    assert not (ml.path / "output" / "success").exists()
    newest = ml.checkpoints()[-1]  # ckpt-EPOCH-STEP.json; STEP > 0: saved mid-epoch, at the stop
    found = re.fullmatch(r"ckpt-(\d+)-(\d+)\.json", newest)
    assert found is not None
    epoch, step = int(found[1]), int(found[2])
    assert step > 0, ml.checkpoints()

    ml.write_config("hyperparameters.json", {"epochs": str(epoch + 2)})
    resumed = podman.run(image, "train", options=[*ml.mounts(), *options])
    assert resumed.code == 0, resumed.err.decode()
    messages = [r.get("msg", "") for r in resumed.records("stderr")]
    assert f"INFO train: resumed from checkpoint: epoch {epoch} step {step}" in messages
    assert (ml.path / "output" / "success").exists()
    assert not (ml.path / "output" / "failure").exists()
    assert len(json.loads(ml.read("model/model.json"))["losses"]) == epoch + 2


def test_stop_without_smsupervise_skips_hook_and_outcome(podman: Podman, image: str, tmp_path: Path) -> None:
    """Negative twin: with ENTRYPOINT ["python3", "train.py"] no hook runs and no outcome file says why."""
    ml = MlTree(tmp_path / "ml", LONG_RUN)
    env = {
        "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
        "SM_CHANNEL_VALIDATION": "/opt/ml/input/data/validation",
        "SM_MODEL_DIR": "/opt/ml/model",
    }
    options = [
        *ml.mounts(),
        "--env",
        HOOK,
        "--workdir",
        "/opt/ml/code",
        "--entrypoint",
        '["python3", "train.py"]',
    ]
    options += [f"--env={key}={value}" for key, value in env.items()]
    job = podman.start(image, "--epochs", "100000", "--step-seconds", "0.005", options=options)
    started_training(ml)
    podman.stop(job.name, 120)
    assert job.wait() == 0  # the example job handles SIGTERM itself, as PID 1 too
    assert not (ml.path / "checkpoints" / "hook.txt").exists()
    assert sorted(p.name for p in (ml.path / "output").iterdir()) == []


def test_term_ignored_until_sigkill_at_grace(podman: Podman, image: str) -> None:
    """A job that ignores SIGTERM is SIGKILLed by smsupervise at its grace period, not by podman."""
    options = [*TESTS, "--env", "SMSUPERVISE_GRACE_PERIOD=2"]
    job = podman.start(image, "python3", "/tests/container/jobs/signals.py", "--ignore-term", options=options)
    job.wait_for_line('"msg":"ready"', stream="stdout")
    podman.stop(job.name, 120)
    assert job.wait() == 137
    assert job.wait_for_event("grace_expired")["grace_period"] == 2
    assert job.wait_for_event("child_exited")["signal"] == "SIGKILL"


def test_job_without_handler_stops_on_term(podman: Podman, image: str) -> None:
    """A job with no SIGTERM handler gets the forwarded SIGTERM and dies of it (143)."""
    job = podman.start(image, "python3", "-c", SLEEPER)
    job.wait_for_line('"msg":"ready"', stream="stdout")
    podman.stop(job.name, 120)
    assert job.wait() == 143
    assert job.wait_for_event("child_exited")["signal"] == "SIGTERM"


def test_pid_1_without_handler_ignores_term(podman: Podman, image: str) -> None:
    """Negative twin: the same job as PID 1 (no smsupervise) ignores SIGTERM until podman's SIGKILL."""
    job = podman.start(image, "-c", SLEEPER, options=["--entrypoint", "python3"])
    job.wait_for_line("^ready$", stream="stdout")
    podman.stop(job.name, 2)
    assert job.wait() == 137
