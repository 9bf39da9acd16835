"""Differential tests against the real sagemaker-training 5.1.4 (in a venv of its own): for the
same tree, the script sees the same argv, cwd and SM_* values under both.

The only differences are deliberate and listed in the README: PYTHONPATH (the code dir is
prepended to the existing value instead of replaced by the toolkit's own sys.path).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON
from tests.sagemaker import fixtures

TOOLKIT = Path(os.environ.get("SMSUPERVISE_TOOLKIT_VENV", Path(__file__).parents[2] / ".venv-toolkit"))
pytestmark = pytest.mark.skipif(
    not (TOOLKIT / "bin" / "train").exists(),
    reason=f"sagemaker-training is not installed in {TOOLKIT} (run `make toolkit`)",
)

CASES = {
    "every-type-1-host": {"hyperparameters": fixtures.EVERY_TYPE},
    "3-hosts-second": {"hyperparameters": {"epochs": "3"}, "hosts": 3, "current": 2},
    "3-hosts-no-groups-ps": {
        "hyperparameters": {"sagemaker_parameter_server_enabled": "true", "a": "1"},
        "hosts": 3,
        "groups": False,
    },
    "hetero-groups-distribution-elsewhere": {  # the master is the distribution group's first host
        "hyperparameters": {"sagemaker_distribution_instance_groups": '["gpu"]', "e": "1"},
        "hosts": 3,
        "current": 2,
        "hetero": True,
    },
    "file-and-pipe-channels": {
        "hyperparameters": {"b": '"x"'},
        "channels": {"train": "Pipe", "validation": "File", "test-set": "FastFile"},
    },
    "no-channels": {"hyperparameters": {}, "channels": {}},
    "shell-entry": {
        "hyperparameters": {"epochs": "2", "name": '"a b; echo x"', "q": '"it\'s"'},
        "entry": "train.sh",
    },
    "tarball-source": {"hyperparameters": {"epochs": "4"}, "source": "tar.gz"},
    "package-entry": {"hyperparameters": {"epochs": "5", "k": "1"}, "package": True},
}


def _run_both(
    tmp_path: Path, case: dict[str, Any], ours: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the toolkit and smsupervise on trees built from ``case`` (smsupervise's from ``ours``
    when given) and return what each entry point saw, with the roots replaced by placeholders."""
    dumps = {}
    for who in ("toolkit", "smsupervise"):
        base = fixtures.build(tmp_path / who, **(ours if who == "smsupervise" and ours else case))
        env = {
            "PATH": f"{TOOLKIT / 'bin'}:{os.environ['PATH']}",
            "SAGEMAKER_BASE_DIR": str(base),
            "SM_STUDIO_LOCAL_MODE": "true",
            "TRAINING_JOB_NAME": "job-1",
            "HOME": str(tmp_path),
            "DUMP": str(tmp_path / f"{who}.json"),
            "LANG": "C.UTF-8",
        }
        if who == "toolkit":
            argv = [str(TOOLKIT / "bin" / "train")]
        else:
            env["SMSUPERVISE_PYTHON"] = str(TOOLKIT / "bin" / "python")
            argv = [PYTHON, "-m", "smsupervise", "--log-level", "warning", "train"]
        result = subprocess.run(argv, env=env, capture_output=True, timeout=300, check=False)
        assert result.returncode == 0, (who, result.stdout[-3000:], result.stderr[-3000:])
        text = (tmp_path / f"{who}.json").read_text().replace(str(base), "<BASE>")
        text = text.replace(str(tmp_path / who), "<ROOT>")
        dumps[who] = json.loads(text)
    return dumps["toolkit"], dumps["smsupervise"]


@pytest.mark.parametrize("name", list(CASES))
def test_script_sees_the_same_argv_cwd_and_environment(name: str, tmp_path: Path) -> None:
    """Same tree, same job: the entry point gets identical argv, cwd and SM_* under both."""
    toolkit, ours = _run_both(tmp_path, CASES[name])
    assert ours["argv"] == toolkit["argv"]
    assert ours["cwd"] == toolkit["cwd"] == "<BASE>/code"
    toolkit_env = {k: v for k, v in toolkit["env"].items() if k != "PYTHONPATH"}
    ours_env = {k: v for k, v in ours["env"].items() if k != "PYTHONPATH"}
    assert ours_env == toolkit_env
    assert ours["env"].get("PYTHONPATH", "<BASE>/code").split(":")[0] == "<BASE>/code"


def test_the_comparison_can_fail(tmp_path: Path) -> None:
    """The negative twin: the same comparison, with one hyperparameter changed on one side only,
    finds the difference in both argv and SM_HPS."""
    toolkit, ours = _run_both(
        tmp_path, {"hyperparameters": {"epochs": "10"}}, ours={"hyperparameters": {"epochs": "11"}}
    )
    assert ours["argv"] != toolkit["argv"]
    assert ours["env"]["SM_HPS"] != toolkit["env"]["SM_HPS"]
    assert ours["cwd"] == toolkit["cwd"]
