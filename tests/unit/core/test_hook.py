"""The checkpoint hook's contract (core/hook.py), shared by the stop sequence and the debug socket."""

from __future__ import annotations

from smsupervise.core.hook import hook_argv, hook_env


def test_hook_words_are_split_as_a_shell_would() -> None:
    """Quoted words stay whole (the twin: splitting on spaces would cut them)."""
    command = "sh -c 'save --to \"/opt/ml/checkpoints/a b\"'"
    assert hook_argv(command) == ("sh", "-c", 'save --to "/opt/ml/checkpoints/a b"')
    assert hook_argv(command) != tuple(command.split())


def test_hook_env_says_why_and_by_when_in_whole_seconds() -> None:
    """The reason as given and the deadline truncated to a whole Unix second; nothing else."""
    assert hook_env("SIGTERM", 1_700_000_000.9) == {
        "SMSUPERVISE_STOP_REASON": "SIGTERM",
        "SMSUPERVISE_DEADLINE": "1700000000",
    }
    assert hook_env("CheckpointRequested", 5.0)["SMSUPERVISE_STOP_REASON"] == "CheckpointRequested"
