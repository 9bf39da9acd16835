"""A stop while the source is being unpacked is honoured at once, as subreaper and as PID 1."""

from __future__ import annotations

import json
import os
import re
import tarfile
from pathlib import Path

from tests.conftest import PYTHON, Supervised, events, supervisor_argv
from tests.sagemaker import fixtures

BIG = 4 << 30  # bytes of zeros: seconds to write, so the stop surely lands during the unpack


def _sparse_tarball(path: Path) -> Path:
    """An uncompressed tar with train.py and a 4 GiB member of zeros, sparse on disk (made at once)."""
    body = b"open('TRAINED', 'w').close()\n"
    script = tarfile.TarInfo("train.py")
    script.size = len(body)
    big = tarfile.TarInfo("big.bin")
    big.size = BIG
    with path.open("wb") as out:
        out.write(script.tobuf(tarfile.GNU_FORMAT))
        out.write(body + b"\0" * (-len(body) % 512))
        out.write(big.tobuf(tarfile.GNU_FORMAT))
        out.truncate(out.tell() + BIG + 1024)  # the zeros, then the two zero blocks that end it
    return path


def test_a_sigterm_during_the_unpack_ends_the_run_before_training(mode: str, tmp_path: Path) -> None:
    """SIGTERM while a large source archive is being unpacked: the run ends promptly with 143, no
    training, nothing of the source left, and a failure file saying it stopped before training
    started, "after" counted from smsupervise's start (not 0.0 s)."""
    base = fixtures.build(tmp_path, hyperparameters={})
    tarball = _sparse_tarball(tmp_path / "big.tar")
    hps_file = base / "input" / "config" / "hyperparameters.json"
    hps = json.loads(hps_file.read_text())
    hps["sagemaker_submit_directory"] = json.dumps(str(tarball))
    hps_file.write_text(json.dumps(hps))
    env = {"PATH": os.environ["PATH"], "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_PYTHON": PYTHON}
    run = Supervised(mode, supervisor_argv(mode, "train"), env=env, cwd=tmp_path)
    code, _, err = run.signal_when(
        lambda: [*base.glob(".smsupervise-source-*/big.bin"), *base.glob("code/big.bin")],
        what="the unpack to reach big.bin",
    )
    assert code == 143, err.decode()[-2000:]
    names = [e["event"] for e in events(err)]
    assert "source_stopped" in names
    # promptly: inside the 4 GiB member, not after writing it (which is what would take long)
    assert next(e for e in events(err) if e["event"] == "source_stopped")["when"] == "while unpacking big.bin"
    assert "child_spawned" not in names
    assert not (tmp_path / "TRAINED").exists()
    assert not (base / "code" / "TRAINED").exists()
    assert list((base / "code").iterdir()) == []
    assert not list(base.glob(".smsupervise-source-*"))
    failure = (base / "output" / "failure").read_text()
    found = re.match(
        r"Stopped by SIGTERM after (\d+\.\d) s; training \(source fetch stopped while unpacking big.bin\) "
        "had not started",
        failure,
    )
    assert found, failure
    assert float(found.group(1)) > 0
