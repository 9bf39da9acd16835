"""Script mode's entry point as ``decide`` found it, for ``prepare`` and the launcher's wiring
(``distribution``) to finish: a record of its own, so neither imports the other's module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from smsupervise.distributed.cluster import ClusterOptions


class Script(NamedTuple):
    """Script mode's entry point, as ``prepare`` needs it to finish the job ``decide`` began."""

    entry: str
    code_dir: str
    where: str  # the hyperparameters file, for errors
    source: str  # sagemaker_submit_directory
    source_action: str  # what prepare does with it: keep, copy, unpack, download
    python: str | None
    args: tuple[str, ...]
    env: Mapping[str, str]
    job_variables: tuple[str, ...] = ()  # the toolkit's SM_* names, in its order (mpirun's -x)
    cluster_options: ClusterOptions | None = None  # --fail-fast, --cluster-port, --peer-wait, ...
    run_id: str = ""  # decide()'s token for this run: names what the run makes (torchrun's rank logs)
