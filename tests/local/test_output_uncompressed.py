"""OutputDataConfig.CompressionType NONE: the model and the output data are uploaded uncompressed,
file by file, under ``<S3OutputPath>/<job>/output/model/`` and ``.../output/data/``, and
ModelArtifacts names the model's prefix (with its trailing ``/``, where the SDK's ``model_data``
looks for an uncompressed model); GZIP (the default) stays two archives."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.local.conftest import described, needs_root, request, run, run_args


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@needs_root
@pytest.mark.parametrize("count", [1, 2])
def test_none_uploads_every_hosts_files_uncompressed(tmp_path: Path, count: int) -> None:
    """Every host's model and output data files, byte for byte, merged, under output/model/ and
    output/data/; no archive; describe's ModelArtifacts is the model prefix."""
    body = request(tmp_path, "hosts", count=count)
    body["OutputDataConfig"]["CompressionType"] = "NONE"
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out" / "probe-hosts" / "output"
    expected_model: dict[str, bytes] = {}
    expected_data: dict[str, bytes] = {}
    for k in range(1, count + 1):
        tree = tmp_path / "work" / "hosts" / f"algo-{k}" / "opt_ml"
        expected_model.update(_files(tree / "model"))
        expected_data.update(_files(tree / "output" / "data"))
    assert expected_model
    assert expected_data
    assert _files(out / "model") == expected_model
    assert _files(out / "data") == expected_data
    assert not (out / "model.tar.gz").exists()
    assert not (out / "output.tar.gz").exists()
    body = described(tmp_path)
    assert body["ModelArtifacts"]["S3ModelArtifacts"] == f"file://{out}/model/"
    assert body["OutputDataConfig"]["CompressionType"] == "NONE"


@needs_root
def test_gzip_stays_two_archives(tmp_path: Path) -> None:
    """The negative twin: GZIP given explicitly (as the default) makes the two archives and no
    uncompressed prefix."""
    body = request(tmp_path, "hosts")
    body["OutputDataConfig"]["CompressionType"] = "GZIP"
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out" / "probe-hosts" / "output"
    assert sorted(p.name for p in out.iterdir()) == ["model.tar.gz", "output.tar.gz"]
    assert described(tmp_path)["ModelArtifacts"]["S3ModelArtifacts"] == f"file://{out}/model.tar.gz"


@needs_root
def test_none_on_s3_puts_each_file_under_the_prefix(tmp_path: Path, s3: Any) -> None:
    """The same on S3 (the stand-in endpoint): one object per file under <job>/output/model/ and
    <job>/output/data/, and ModelArtifacts the s3:// prefix."""
    s3.put("s3://results/.keep", b"")
    body = request(
        tmp_path, "hosts", OutputDataConfig={"S3OutputPath": "s3://results/runs", "CompressionType": "NONE"}
    )
    result = subprocess.run(
        run_args(tmp_path, body),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, **s3.env},
    )
    assert result.returncode == 0, result.stderr
    assert s3.keys("results") == [
        ".keep",
        "runs/probe-hosts/output/data/out-algo-1.txt",
        "runs/probe-hosts/output/model/hosts-algo-1.json",
    ]
    assert s3.get("s3://results/runs/probe-hosts/output/data/out-algo-1.txt") == b"output data\n"
    assert (
        described(tmp_path)["ModelArtifacts"]["S3ModelArtifacts"]
        == "s3://results/runs/probe-hosts/output/model/"
    )
