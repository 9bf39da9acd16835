"""The cluster as the toolkit sees it: hosts, distribution hosts, the master, this host's node rank.

Read from ``SM_TRAINING_ENV`` (built by ``sagemaker.environment`` exactly as the toolkit builds it), so
the runners use the very values the job's environment shows. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NamedTuple

from smsupervise.errors import ConfigError

RESOURCE_CONFIG = "resourceconfig.json"


class Topology(NamedTuple):
    """Who is in the job and where this host stands in it."""

    hosts: tuple[str, ...]  # every host of resourceconfig.json, in its order
    distribution_hosts: tuple[str, ...]  # the hosts of the distribution instance groups
    current_host: str
    master: str  # distribution_hosts[0] (else hosts[0]), as the toolkit's master_hostname
    interface: str  # network_interface_name (default eth0)
    instance_type: str
    num_gpus: int
    num_neurons: int
    framework: Mapping[str, object]  # additional_framework_parameters (sagemaker_* hyperparameters)

    @property
    def is_master(self) -> bool:
        return self.current_host == self.master

    @property
    def node_rank(self) -> int:
        """The toolkit's ``distribution_hosts.index(current_host)``; a clear error where it raises."""
        if self.current_host not in self.distribution_hosts:
            raise ConfigError(
                RESOURCE_CONFIG,
                "current_host",
                f"{self.current_host!r} is not among the distribution hosts {list(self.distribution_hosts)}",
                "set sagemaker_distribution_instance_groups to include this host's instance group",
            )
        return self.distribution_hosts.index(self.current_host)

    @property
    def peers(self) -> tuple[str, ...]:
        """Every other host of the job."""
        return tuple(host for host in self.hosts if host != self.current_host)


def from_variables(variables: Mapping[str, str]) -> Topology:
    """The topology from the job's ``SM_TRAINING_ENV`` (the toolkit's ``Environment`` as JSON)."""
    props = json.loads(variables["SM_TRAINING_ENV"])
    hosts = tuple(props["hosts"])
    distribution = tuple(props.get("distribution_hosts") or ())
    return Topology(
        hosts=hosts,
        distribution_hosts=distribution,
        current_host=str(props["current_host"]),
        master=str(props["master_hostname"]),
        interface=str(props.get("network_interface_name") or "eth0"),
        instance_type=str(props.get("current_instance_type") or "local"),
        num_gpus=int(props.get("num_gpus") or 0),
        num_neurons=int(props.get("num_neurons") or 0),
        framework=dict(props.get("additional_framework_parameters") or {}),
    )


def processes_per_host(topology: Topology) -> int:
    """``sagemaker_mpi_num_of_processes_per_host``, else GPUs, else Neuron cores, else 1 (runner.py)."""
    default = topology.num_gpus if topology.num_gpus > 0 else topology.num_neurons or 1
    wanted = topology.framework.get("sagemaker_mpi_num_of_processes_per_host")
    return int(wanted) if wanted else default  # type: ignore[call-overload]
