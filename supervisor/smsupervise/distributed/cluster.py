"""The distributed part of a plan: this host's place in the cluster, the launcher it runs, and how
the supervisors coordinate (peer wait, fail-fast mesh, rank logs). Pure: decided before anything runs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import NamedTuple

from smsupervise.distributed import launchers, meshkey
from smsupervise.distributed.topology import Topology, from_variables

RANK_LOG_VARIABLES = ("PET_LOG_DIR", "PET_REDIRECTS", "PET_TEE")


class ClusterOptions(NamedTuple):
    """The settings that shape the cluster's behaviour (see settings.py)."""

    fail_fast: bool = True
    port: int = 7778
    peer_wait: float = 900.0
    ranks: frozenset[int] | None = None  # ranks shown on the console; None: all
    wait_for_peers: bool = True  # False with SM_STUDIO_LOCAL_MODE=true, as the toolkit
    peer_timeout: float = 30.0  # a joined peer silent this long is presumed gone; 0: never


class ClusterPlan(NamedTuple):
    """What this host does in a distributed job."""

    topology: Topology
    launch: launchers.Launch | None  # None: the plain process runner (still one job per host)
    options: ClusterOptions
    rank_log_dir: str | None  # torchrun's per-rank files (PET_LOG_DIR), read by ranklogs
    watch_ranks: bool = False  # torchrun without restarts: a failed rank fails the host (rankwatch)
    mesh_key: bytes = b""  # the job's key for the mesh (meshkey.derive); b"": from the job name only

    @property
    def multi_host(self) -> bool:
        return len(self.topology.hosts) > 1


def gethostname_shim() -> str | None:
    """The toolkit's LD_PRELOAD library (``gethostname`` extension module), when it is installed."""
    spec = importlib.util.find_spec("gethostname")
    return spec.origin if spec is not None and spec.origin else None


def decide(  # noqa: PLR0917 - the plan's parts
    child_env: Mapping[str, str],
    extra_env: dict[str, str],
    job: launchers.JobFacts,
    options: ClusterOptions,
    on_path: Mapping[str, bool],
    tmpdir: str,
    run_id: str,
    ld_preload: str | None = None,
) -> ClusterPlan | None:
    """The cluster part of the plan; None for a one-host job without a launcher. Puts the
    launcher's variables (and, for torchrun, the per-rank log variables) in ``extra_env``. The same
    inputs (``run_id`` included) give the same plan: ``inspect`` shows what the run uses."""
    topology = from_variables(child_env)
    launch = launchers.choose(topology, job, child_env, on_path, ld_preload)
    if launch is None and len(topology.hosts) == 1:
        return None
    rank_log_dir = None
    if launch is not None:
        extra_env.update(launch.env)
        if launch.agent == "torchrun" and not any(name in child_env for name in RANK_LOG_VARIABLES):
            # torchrun reads every option from PET_<OPTION> (argparse_util.env): its argv stays the
            # toolkit's. Each rank's output goes to its own files, which ranklogs reads.
            rank_log_dir = os.path.join(tmpdir, f"smsupervise-ranks-{run_id}")
            extra_env["PET_LOG_DIR"] = rank_log_dir
            extra_env["PET_REDIRECTS"] = "3"
    # A failed rank is told at once when it fails the host (no restarts) and its stderr is in a
    # file of ours (its tail goes with the report).
    watch_ranks = rank_log_dir is not None and not _restarts(child_env)
    key = meshkey.derive(child_env, child_env.get("TRAINING_JOB_NAME", ""), topology.hosts)
    return ClusterPlan(topology, launch, options, rank_log_dir, watch_ranks, key)


def _restarts(child_env: Mapping[str, str]) -> bool:
    """Whether torchrun restarts failed ranks (``PET_MAX_RESTARTS``; the toolkit's argv has none)."""
    value = child_env.get("PET_MAX_RESTARTS", "0").strip() or "0"
    return value != "0"
