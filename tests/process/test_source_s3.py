"""An ``s3://`` source (sagemaker_submit_directory) from the stand-in endpoint: a stop during the
download ends the run at once with nothing left behind; a complete one runs the job."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

from tests.conftest import PYTHON, Supervised, event_names, supervisor_argv
from tests.sagemaker import fixtures

URI = "s3://jobs/my-job/source/sourcedir.tar.gz"
TRAIN = b"import sys\nopen('TRAINED', 'w').close()\nsys.exit(7)\n"
PAYLOAD = 24 << 20  # random bytes in the archive: 24 one-MiB chunks, so a stop lands midway


def _archive() -> bytes:
    """A source tarball: train.py (exits 7 after leaving a mark) and incompressible ballast."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as archive:
        for name, data in (("train.py", TRAIN), ("ballast.bin", os.urandom(PAYLOAD))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _job(tmp_path: Path, s3: Any, uri: str = URI) -> tuple[Path, dict[str, str]]:
    """A base dir whose source is ``uri``, and the environment that reaches the endpoint."""
    base = fixtures.build(tmp_path, hyperparameters={})
    hps_file = base / "input" / "config" / "hyperparameters.json"
    hps = json.loads(hps_file.read_text())
    hps["sagemaker_submit_directory"] = json.dumps(uri)
    hps_file.write_text(json.dumps(hps))
    env = {"PATH": os.environ["PATH"], "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_PYTHON": PYTHON}
    return base, {**env, **s3.env}


def _leftovers(base: Path) -> list[Path]:
    return [*base.glob(".smsupervise-source-*"), *(base / "code").glob(".smsupervise-source-*")]


def test_a_sigterm_during_an_s3_download_stops_it_and_leaves_nothing(
    mode: str, tmp_path: Path, s3: Any
) -> None:
    """SIGTERM while a throttled s3:// source downloads: exit 143 before the download completes
    (the server never sent the whole object), no job, no code, no partial file, and the failure
    file says the download was stopped."""
    data = _archive()
    s3.put(URI, data)
    s3.store.throttle = 2 << 20  # bytes/s: about 12 s for the whole object
    base, env = _job(tmp_path, s3)
    run = Supervised(mode, supervisor_argv(mode, "train"), env=env, cwd=tmp_path)
    code, _, err = run.signal_when(
        lambda: [p for p in base.glob(".smsupervise-source-*.part") if p.stat().st_size > 0],
        what="the first chunk of the download on disk",
    )
    assert code == 143, err.decode()[-2000:]
    names = event_names(err)
    assert "source_stopped" in names, names
    assert "source_ready" not in names
    assert "child_spawned" not in names
    assert not (tmp_path / "TRAINED").exists()
    assert list((base / "code").iterdir()) == []
    assert _leftovers(base) == []
    failure = (base / "output" / "failure").read_text()
    found = re.search(rf"source fetch stopped while downloading {URI} at (\d+) of (\d+) bytes", failure)
    assert found, failure
    assert failure.startswith("Stopped by SIGTERM")
    assert 0 < int(found.group(1)) < int(found.group(2)) == len(data)


def test_the_same_download_unthrottled_completes_and_the_job_runs(tmp_path: Path, s3: Any) -> None:
    """The negative twin: the same s3:// source, not stopped, is unpacked and its job's code (7) is ours."""
    data = _archive()
    s3.put(URI, data)
    base, env = _job(tmp_path, s3)
    run = Supervised("subreaper", supervisor_argv("subreaper", "train"), env=env, cwd=tmp_path)
    code, _, err = run.wait(timeout=120)
    assert code == 7, err.decode()[-2000:]
    names = event_names(err)
    assert names.index("source_ready") < names.index("child_spawned")
    assert (base / "code" / "TRAINED").exists()
    assert (base / "code" / "ballast.bin").stat().st_size == PAYLOAD
    assert _leftovers(base) == []


def test_a_missing_key_names_the_uri(tmp_path: Path, s3: Any) -> None:
    """A source key that is not in the bucket: exit 2 and a failure file naming the URI and NoSuchKey."""
    s3.put("s3://jobs/other.tar.gz", _archive())
    missing = "s3://jobs/my-job/source/missing.tar.gz"
    base, env = _job(tmp_path, s3, missing)
    code, _, err = Supervised("subreaper", supervisor_argv("subreaper", "train"), env=env).wait(timeout=120)
    assert code == 2, err.decode()[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert f"{missing} could not be downloaded (NoSuchKey" in failure
    assert "sagemaker_submit_directory" in failure
    assert _leftovers(base) == []
    assert list((base / "code").iterdir()) == []


def test_a_corrupt_object_names_the_uri(tmp_path: Path, s3: Any) -> None:
    """An object that is not a tar archive: exit 2 and a failure file naming the URI; nothing unpacked."""
    s3.put(URI, b"\x1f\x8b not really gzip" * 100)
    base, env = _job(tmp_path, s3)
    code, _, err = Supervised("subreaper", supervisor_argv("subreaper", "train"), env=env).wait(timeout=120)
    assert code == 2, err.decode()[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert f"{URI} is not a readable tar archive" in failure
    assert _leftovers(base) == []
    assert list((base / "code").iterdir()) == []


def _gets(s3: Any) -> list[str]:
    """The Range header of every GetObject of the source, in order ("" for a whole-object GET)."""
    return [
        ranged
        for method, path, ranged in s3.store.requests
        if method == "GET" and path == "/jobs/my-job/source/sourcedir.tar.gz"
    ]


STALL_AT = 3 << 20  # the server stops sending after 3 one-MiB chunks and keeps the connection open


def test_a_sigterm_during_a_stalled_download_ends_the_run(tmp_path: Path, s3: Any) -> None:
    """SIGTERM while the server sends nothing more (connection open): the stalled read gives up,
    the stop wins over a resume (one GET only), exit 143, nothing left behind."""
    s3.put(URI, _archive())
    s3.store.stall_after = STALL_AT
    base, env = _job(tmp_path, s3)
    run = Supervised("subreaper", supervisor_argv("subreaper", "train"), env=env, cwd=tmp_path)
    code, _, err = run.signal_when(
        lambda: [p for p in base.glob(".smsupervise-source-*.part") if p.stat().st_size == STALL_AT],
        what="the download to stall after 3 MiB",
    )
    assert code == 143, err.decode()[-2000:]
    assert _gets(s3) == [""]
    failure = (base / "output" / "failure").read_text()
    assert f"source fetch stopped while downloading {URI} at {STALL_AT} of " in failure
    assert "child_spawned" not in event_names(err)
    assert _leftovers(base) == []
    assert list((base / "code").iterdir()) == []


def test_a_stalled_download_resumes_where_it_was_and_the_job_runs(tmp_path: Path, s3: Any) -> None:
    """The negative twin: the same stall without a stop is resumed with a ranged GET from the last
    whole chunk, the archive is intact and the job's code (7) is ours."""
    s3.put(URI, _archive())
    s3.store.stall_after = STALL_AT
    base, env = _job(tmp_path, s3)
    code, _, err = Supervised("subreaper", supervisor_argv("subreaper", "train"), env=env).wait(timeout=120)
    assert code == 7, err.decode()[-2000:]
    assert _gets(s3) == ["", f"bytes={STALL_AT}-"]
    assert (base / "code" / "ballast.bin").stat().st_size == PAYLOAD
    assert _leftovers(base) == []
