"""The configuration readers: defaults for missing files, clear errors for bad ones, never a crash."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsupervise.errors import ConfigError
from smsupervise.sagemaker import config as smconfig
from smsupervise.sagemaker import environment

FILES = ("hyperparameters.json", "resourceconfig.json", "inputdataconfig.json", "checkpointconfig.json")


def _tree(root: Path, **files: Any) -> Path:
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        (config / f"{name}.json").write_bytes(data)
    return root


def test_missing_files_get_the_toolkits_defaults(tmp_path: Path) -> None:
    """No config at all: no hyperparameters, no channels, this host as a one-host cluster."""
    cfg = smconfig.load(str(_tree(tmp_path)))
    assert cfg.hyperparameters == {}
    assert cfg.input_data_config == {}
    assert cfg.resource_config["hosts"] == [cfg.resource_config["current_host"]]
    assert cfg.checkpoint_dir == str(tmp_path / "checkpoints")  # under the base dir, as /opt/ml's is


@pytest.mark.parametrize(
    ("files", "where", "needle"),
    [
        ({"hyperparameters": b"{not json"}, "hyperparameters.json", "is not valid JSON"),
        ({"hyperparameters": [1, 2]}, "hyperparameters.json", "must be a JSON object"),
        (
            {"resourceconfig": {"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]}},
            "resourceconfig.json: field 'current_host'",
            "'algo-3' is not in 'hosts'",
        ),
        (
            {"resourceconfig": {"current_host": "a", "hosts": []}},
            "resourceconfig.json: field 'hosts'",
            "non-empty list",
        ),
        (
            {"inputdataconfig": {"train": {"TrainingInputMode": "Stream"}}},
            "inputdataconfig.json: field 'train.TrainingInputMode'",
            "use one of File, Pipe, FastFile",
        ),
        ({"inputdataconfig": {"bad/name": {}}}, "field 'bad/name'", "not a valid channel name"),
        (
            {"checkpointconfig": {"LocalPath": "relative/dir"}},
            "checkpointconfig.json: field 'LocalPath'",
            "not an absolute path",
        ),
        ({"hyperparameters": b"\xff\xfe"}, "hyperparameters.json", "is not UTF-8"),
    ],
)
def test_bad_files_name_the_file_the_field_and_the_fix(
    tmp_path: Path, files: dict[str, Any], where: str, needle: str
) -> None:
    """Each malformed file is a ConfigError whose message names where and what, with a fix."""
    with pytest.raises(ConfigError) as raised:
        smconfig.load(str(_tree(tmp_path, **files)))
    message = raised.value.message()
    assert where in message
    assert needle in message
    assert raised.value.exit_code == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
file_contents = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.dictionaries(
        st.sampled_from(
            [
                "current_host",
                "hosts",
                "instance_groups",
                "network_interface_name",
                "train",
                "LocalPath",
                "TrainingInputMode",
                "current_group_name",
            ]
        ),
        json_values,
        max_size=5,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(contents=st.fixed_dictionaries({}, optional=dict.fromkeys(FILES, file_contents)))
def test_any_file_content_gives_our_error_or_a_usable_config(contents: dict[str, bytes]) -> None:
    """Whatever the files hold: load() raises only ConfigError, and what loads builds an env."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "input" / "config"
        config.mkdir(parents=True)
        for name, data in contents.items():
            (config / name).write_bytes(data)
        try:
            cfg = smconfig.load(tmp)
        except ConfigError as error:
            error_path = error.path
        else:
            error_path = None
        if error_path is not None:
            assert error_path.startswith(tmp)
            return
        built = environment.build(cfg, {}, environment.Machine(num_cpus=2))
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in built.variables.items())


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("train\n", "is not a valid channel name"),
        (".", "is not a valid channel name"),
        ("..", "is not a valid channel name"),
        ("x" * 65, "is not a valid channel name"),
        ("a/b", "is not a valid channel name"),
    ],
)
def test_channel_names_are_matched_whole(tmp_path: Path, name: str, needle: str) -> None:
    """A trailing newline, '.', '..', a slash or a name over 64 characters is refused (exit 2), with
    the file and the channel named; an ordinary name of the same shape passes (the twin)."""
    config = {name: {"TrainingInputMode": "File"}}
    with pytest.raises(ConfigError) as raised:
        smconfig.load(str(_tree(tmp_path, inputdataconfig=config)))
    assert raised.value.field == name
    assert needle in raised.value.message()
    ok = smconfig.load(str(_tree(tmp_path / "ok", inputdataconfig={"train.v-2_x": {}, "y" * 64: {}})))
    assert set(ok.input_data_config) == {"train.v-2_x", "y" * 64}


def test_two_channels_that_would_share_a_variable_are_refused(tmp_path: Path) -> None:
    """`train` and `TRAIN` would both be SM_CHANNEL_TRAIN: refused, naming both."""
    with pytest.raises(ConfigError, match="would both be SM_CHANNEL_TRAIN"):
        smconfig.load(str(_tree(tmp_path, inputdataconfig={"train": {}, "TRAIN": {}})))


@pytest.mark.parametrize("where", ["file", "value"])
def test_json_nested_too_deep_is_a_config_error(tmp_path: Path, where: str) -> None:
    """2000 nested brackets (within SageMaker's 2500-character value limit), in a config file or
    inside one hyperparameter value, is a ConfigError naming the file (and the hyperparameter)."""
    deep = "[" * 2000 + "]" * 2000
    if where == "file":
        (tmp_path / "input" / "config").mkdir(parents=True)
        (tmp_path / "input" / "config" / "resourceconfig.json").write_text(deep)
        field = ""
    else:
        _tree(tmp_path, hyperparameters={"layers": deep})
        field = "layers"
    with pytest.raises(ConfigError, match="nests JSON deeper") as raised:
        smconfig.load(str(tmp_path))
    assert raised.value.field == field


def test_a_nul_in_a_hyperparameter_is_a_config_error(tmp_path: Path) -> None:
    """No argv or environment can carry a NUL: the hyperparameter is named, in key or value."""
    for hps, field in (({"a": "x\0y"}, "a"), ({"b\0c": "1"}, "b\\u0000c")):
        with pytest.raises(ConfigError, match="NUL byte") as raised:
            smconfig.load(str(_tree(tmp_path / field.replace("\\", "_"), hyperparameters=hps)))
        assert raised.value.field == field
