"""Configuration that passed the checks and crashed later (issue 29), by class: a NUL or a lone
surrogate in anything that becomes argv or the environment, however it is written and wherever
it sits (any config file, a key or a value, inside a hyperparameter's JSON), and JSON nested
deeper than the encoders after the check can go. Either ``load`` refuses it naming the file and
the field, or everything after it (the toolkit's environment, its JSON, orjson) works."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsupervise.errors import ConfigError
from smsupervise.sagemaker import config as smconfig
from smsupervise.sagemaker import environment

BAD = ["\0", "\ud800", "\udfff", "\udc80"]  # a NUL; lone surrogates (no UTF-8, no argv, no env)
RESOURCE = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}


def _plant(value: Any, bad: str, path: list[int]) -> Any:
    """``value`` with ``bad`` put into one of its strings or keys, chosen by ``path``."""
    if isinstance(value, dict):
        keys = sorted(value)
        if not keys or path[0] % 3 == 0:
            return {**value, f"k{bad}": "v"} if path[0] % 2 else {**value, "k": f"v{bad}"}
        key = keys[path[0] % len(keys)]
        return {**value, key: _plant(value[key], bad, path[1:] or [0])}
    if isinstance(value, list):
        if not value:
            return [bad]
        index = path[0] % len(value)
        return [*value[:index], _plant(value[index], bad, path[1:] or [0]), *value[index + 1 :]]
    if isinstance(value, str):
        return value[: path[0] % (len(value) + 1)] + bad + value[path[0] % (len(value) + 1) :]
    return bad


def _files(bad: str, where: str, path: list[int], encoded: bool) -> tuple[str, dict[str, Any]]:
    """The four config files with ``bad`` planted in ``where``; a hyperparameter's value is a JSON
    string (as the SDK writes it) when ``encoded``: then ``bad`` is escaped twice."""
    hp_value: Any = {"lr": [0.1, "adam", {"x": "y"}], "name": "run"}
    files: dict[str, Any] = {
        "hyperparameters": {"epochs": "3", "opt": json.dumps(hp_value) if encoded else hp_value},
        "resourceconfig": dict(RESOURCE),
        "inputdataconfig": {"train": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}},
        "checkpointconfig": {"LocalPath": "/opt/ml/checkpoints", "S3Uri": "s3://b/k"},
    }
    if where == "hyperparameters" and encoded:
        files[where]["opt"] = json.dumps(_plant(hp_value, bad, path))
    else:
        files[where] = _plant(files[where], bad, path)
    if where == "resourceconfig" and files[where]["current_host"] not in files[where]["hosts"]:
        files[where]["hosts"] = [*files[where]["hosts"], files[where]["current_host"]]  # the only fault
    return where, files


def _write(root: Path, files: dict[str, Any]) -> Path:
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (config / f"{name}.json").write_text(json.dumps(content))  # ensure_ascii: \u0000, \ud800
    return root


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bad=st.sampled_from(BAD),
    where=st.sampled_from(["hyperparameters", "resourceconfig", "inputdataconfig", "checkpointconfig"]),
    path=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=5),
    encoded=st.booleans(),
)
def test_a_nul_or_a_lone_surrogate_anywhere_is_refused_naming_the_file(
    bad: str, where: str, path: list[int], encoded: bool
) -> None:
    """Written as a JSON escape (``"a\\u0000b"``), in a key or a value, nested in a hyperparameter's
    own JSON, in any config file: a ConfigError naming that file and a field, a fix given."""
    where, files = _files(bad, where, path, encoded)
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(ConfigError) as raised:
        smconfig.load(str(_write(Path(tmp), files)))
    error = raised.value
    assert error.path.endswith(f"{where}.json"), error.message()
    assert "\0" not in error.message()
    assert error.hint


def test_the_same_files_without_it_load_and_build() -> None:
    """The twin: the same files with a plain character where the NUL was load and build an env."""
    for where in ("hyperparameters", "resourceconfig", "inputdataconfig", "checkpointconfig"):
        for encoded in (False, True):
            _, files = _files("z", where, [1, 2, 0], encoded)
            with tempfile.TemporaryDirectory() as tmp:
                cfg = smconfig.load(str(_write(Path(tmp), files)))
                built = environment.build(cfg, {}, environment.Machine(num_cpus=1))
            assert all("\0" not in value for value in built.variables.values())


def _nested_text(depth: int) -> str:
    """JSON nested ``depth`` deep (objects and lists in turn), written without recursion."""
    opens = "".join('{"a":' if level % 2 == 0 else "[" for level in range(depth))
    closes = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return opens + "1" + closes


def _write_hyperparameters(root: Path, depth: int, encoded: bool) -> Path:
    """hyperparameters.json with ``deep`` nested ``depth`` deep: raw JSON, or a JSON string of it."""
    text = _nested_text(depth)
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    value = json.dumps(text) if encoded else text
    (config / "hyperparameters.json").write_text('{"epochs": "3", "deep": ' + value + "}")
    return root


def _everything_after(cfg: smconfig.TrainingConfig) -> None:
    """What runs after the check: the toolkit's environment (stdlib json), the arguments, and
    orjson over the values (the event log's encoder), at a stack as deep as the supervisor's."""
    built = environment.build(cfg, {}, environment.Machine(num_cpus=1))
    orjson.dumps(environment.decode_hyperparameters(cfg.hyperparameters))
    orjson.dumps(built.variables)
    json.loads(built.variables["SM_TRAINING_ENV"])


@settings(max_examples=60, deadline=None)
@given(depth=st.integers(min_value=1, max_value=1200), encoded=st.booleans())
def test_any_nesting_is_refused_or_survives_every_encoder(depth: int, encoded: bool) -> None:
    """JSON 983-987 deep passed the check and crashed the encoders after it (exit 70): at any depth,
    either ``load`` refuses it naming the hyperparameter, or everything after it works."""
    with tempfile.TemporaryDirectory() as tmp:
        root = _write_hyperparameters(Path(tmp), depth, encoded)
        try:
            cfg = smconfig.load(str(root))
        except ConfigError as error:
            refused = error
        else:
            refused = None
            _everything_after(cfg)
    if refused is not None:
        assert refused.field == "deep"
        assert "nests JSON" in refused.problem
        assert refused.path.endswith("hyperparameters.json")


@pytest.mark.parametrize("depth", range(980, 990))
@pytest.mark.parametrize("encoded", [False, True])
def test_the_reported_depths_are_refused(tmp_path: Path, depth: int, encoded: bool) -> None:
    """The examples of the report (983-987, as a JSON string and as raw JSON) are refused."""
    root = _write_hyperparameters(tmp_path, depth, encoded)
    with pytest.raises(ConfigError, match="nests JSON"):
        smconfig.load(str(root))


def test_ordinary_nesting_passes(tmp_path: Path) -> None:
    """The twin: a hyperparameter nested 20 deep (far beyond real ones) loads and encodes."""
    for encoded in (False, True):
        root = _write_hyperparameters(tmp_path / str(encoded), 20, encoded)
        _everything_after(smconfig.load(str(root)))


def test_a_deep_file_names_the_file(tmp_path: Path) -> None:
    """A config file (not a hyperparameter) nested past the limit: refused, naming that file."""
    root = _write(tmp_path, {})
    text = json.dumps(RESOURCE)[:-1] + ', "extra": ' + _nested_text(sys.getrecursionlimit() - 30) + "}"
    (root / "input" / "config" / "resourceconfig.json").write_text(text)
    with pytest.raises(ConfigError, match="nests JSON") as raised:
        smconfig.load(str(root))
    assert raised.value.path.endswith("resourceconfig.json")
