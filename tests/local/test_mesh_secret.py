"""smsupervise-local gives the hosts of one run a shared random mesh secret (meshkey.py), in their
environment only: a local user who reads the work dir's config files cannot derive the mesh key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from smsupervise.distributed import meshkey
from smsupervise.local import job as jobs
from smsupervise.local import launch
from tests.local.conftest import request

SHOW = (
    "import sys, orjson; from smsupervise.local import job, launch; "
    "j = job.validate(orjson.loads(sys.stdin.buffer.read())); "
    "print(launch.job_env(j, '/opt/ml')['SMSUPERVISE_MESH_SECRET'])"
)


def test_every_host_of_a_run_gets_the_same_secret_and_runs_differ(tmp_path: Path) -> None:
    """Two hosts of one run: the same secret (64 hex digits); another run (another process): another."""
    job = jobs.validate(request(tmp_path, "metrics", count=2))
    one, two = launch.job_env(job, "/a"), launch.job_env(job, "/b")
    secret = one[meshkey.SECRET_VARIABLE]
    assert two[meshkey.SECRET_VARIABLE] == secret
    assert len(bytes.fromhex(secret)) == 32
    data = orjson.dumps(request(tmp_path, "metrics"))
    other = subprocess.run([sys.executable, "-c", SHOW], input=data, capture_output=True, check=True)
    assert other.stdout.strip().decode() not in ("", secret)


def test_the_requests_own_secret_wins(tmp_path: Path) -> None:
    """The negative twin: a secret in the request's Environment is the one the hosts get."""
    job = jobs.validate(request(tmp_path, "metrics", Environment={meshkey.SECRET_VARIABLE: "mine"}))
    assert launch.job_env(job, "/a")[meshkey.SECRET_VARIABLE] == "mine"
