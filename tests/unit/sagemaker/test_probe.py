"""probe.machine() asks the machine's own programs, as the toolkit does, and survives their failures."""

from __future__ import annotations

import json
from pathlib import Path

from smsupervise.sagemaker import probe
from smsupervise.sagemaker.environment import Machine, machine_for


def _program(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _env(bin_dir: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_gpus_neuron_cores_and_launchers_are_counted(tmp_path: Path) -> None:
    """nvidia-smi --list-gpus lines, neuron-ls -j nc_count, and smddprun on PATH are all read."""
    bin_dir = tmp_path / "bin"
    _program(bin_dir, "nvidia-smi", 'echo "GPU 0: A10G (UUID: x)"; echo "GPU 1: A10G (UUID: y)"')
    devices = json.dumps([{"nc_count": 2}, {"nc_count": 2}])
    _program(bin_dir, "neuron-ls", f"echo '{devices}'")
    _program(bin_dir, "smddprun", "true")
    machine = probe.machine(_env(bin_dir))
    assert (machine.num_gpus, machine.num_neurons) == (2, 4)
    assert machine.smddprun_installed
    assert not machine.smddpmprun_installed


def test_failing_or_garbled_probes_count_nothing(tmp_path: Path) -> None:
    """The twin: a probe that fails or prints garbage gives 0, never an error."""
    bin_dir = tmp_path / "bin"
    _program(bin_dir, "nvidia-smi", 'echo "GPU 0: A10G"; exit 9')
    _program(bin_dir, "neuron-ls", "echo not json")
    machine = probe.machine(_env(bin_dir))
    assert (machine.num_gpus, machine.num_neurons) == (0, 0)


def test_no_probe_programs_means_a_cpu_machine(tmp_path: Path) -> None:
    """Without nvidia-smi or neuron-ls on PATH nothing is run and the machine has only CPUs."""
    machine = probe.machine(_env(tmp_path / "empty"))
    assert machine.num_cpus >= 1
    assert (machine.num_gpus, machine.num_neurons) == (0, 0)


def test_a_trn2_instance_has_64_neuron_cores_without_probing() -> None:
    """The toolkit's rule for trn2.48xlarge, applied to the probed facts (pure)."""
    assert machine_for(Machine(8), "ml.trn2.48xlarge").num_neurons == 64
    assert machine_for(Machine(8), "ml.m5.xlarge").num_neurons == 0
