"""Names follow the API's patterns whole: a ChannelName or TrainingJobName that matches only up to
a trailing newline (Python's ``$`` allows one) is refused, as the service refuses it; a channel
name that passes is one smsupervise-pipe-emulate takes too."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsupervise.local import job as jobs
from smsupervise.pipemode.emulate import CHANNEL_NAME as EMULATOR_RULE
from tests.local.conftest import channel, request


@pytest.mark.parametrize("name", ["train\n", "train\n\n", "\ntrain", "tr ain", "../esc", "a/b", "x" * 65])
def test_a_channel_name_outside_the_pattern_is_refused(tmp_path: Path, name: str) -> None:
    """Each shape: one problem at ChannelName."""
    body = request(tmp_path, "metrics", InputDataConfig=[channel(name, "/data")])
    with pytest.raises(jobs.InvalidRequest) as caught:
        jobs.validate(body, "job.json")
    assert [p.path for p in caught.value.problems] == ["InputDataConfig[0].ChannelName"]


@pytest.mark.parametrize("name", ["job\n", "job-1\n", "-job"])
def test_a_job_name_outside_the_pattern_is_refused(tmp_path: Path, name: str) -> None:
    """A trailing newline is no part of ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$."""
    with pytest.raises(jobs.InvalidRequest) as caught:
        jobs.validate(request(tmp_path, "metrics", name=name), "job.json")
    assert [p.path for p in caught.value.problems] == ["TrainingJobName"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.from_regex(r"[A-Za-z0-9.\-_]{1,64}", fullmatch=True))
def test_every_name_of_the_pattern_passes_and_the_emulator_takes_it(tmp_path: Path, name: str) -> None:
    """The negative twin: names of the pattern are valid, and the Pipe emulator's rule agrees."""
    body = copy.deepcopy(request(tmp_path, "metrics", InputDataConfig=[channel(name, "/data")]))
    job = jobs.validate(body, "job.json")
    assert job.channels[0].name == name
    assert EMULATOR_RULE.fullmatch(name)
