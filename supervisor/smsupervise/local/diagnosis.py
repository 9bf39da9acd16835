"""``DIR/diagnosis.json``: the failure class of each host (what smsupervise wrote beside its failure
file, ``output/failure_class``), kept out of ``describe.json`` so that file keeps the shape of
DescribeTrainingJob's response.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import orjson

from smsupervise.local.launch import HostPlan


def _read_class(plan: HostPlan) -> str | None:
    try:
        with open(os.path.join(plan.tree, "output", "failure_class"), errors="replace") as handle:
            return handle.read(64).strip() or None
    except OSError:
        return None


def write(directory: str, plans: Sequence[HostPlan], first_failed: int | None) -> str:
    """Write ``diagnosis.json`` (``FailureClass``: the first failing host's, else null; ``Hosts``:
    every host's) atomically; returns its path."""
    hosts = {plan.host.name: _read_class(plan) for plan in plans}
    first = plans[first_failed - 1].host.name if first_failed is not None else None
    body = {"FailureClass": hosts.get(first) if first else None, "FailedHost": first, "Hosts": hosts}
    path = os.path.join(directory, "diagnosis.json")
    with open(f"{path}.part", "wb") as handle:
        handle.write(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    os.replace(f"{path}.part", path)
    return path
