"""smsupervise-debug's own flags (--socket, --pid, --trust-uid, --json, --interval) work on either side of
the verb, as a user writes them; after ``exec``/``shell``/``inspect`` they are ours only up to the command
line; an unknown flag is still refused."""

from __future__ import annotations

import orjson
import pytest

from smsupervise.debug.client import hoist_global_flags, parse_command_line
from tests.debug.conftest import debug_cli

VERBS = ["status", "tree", "stacks", "logs", "checkpoint", "release"]


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize(
    "flags",
    [
        ["--json"],
        ["--socket", "/x.sock"],
        ["--socket=/x.sock", "--json"],
        ["--pid", "7", "--interval", "2.5"],
    ],
    ids=["json", "socket", "socket=json", "pid-interval"],
)
def test_a_global_flag_means_the_same_before_or_after_the_verb(verb: str, flags: list[str]) -> None:
    """Parsed before the verb or after it, the options are the same."""
    before = vars(parse_command_line(hoist_global_flags([*flags, verb])))
    after = vars(parse_command_line(hoist_global_flags([verb, *flags])))
    assert before == after
    assert after["json"] is ("--json" in flags)


def test_flags_on_both_sides_add_up_and_the_later_wins() -> None:
    """--json before, --socket after: both count; a flag given twice takes its later value, and
    --trust-uid (a list) adds up."""
    options = parse_command_line(hoist_global_flags(["--json", "--socket", "/a", "status", "--socket", "/b"]))
    assert (options.json, options.socket) == (True, "/b")
    trusting = parse_command_line(hoist_global_flags(["--trust-uid", "5", "status", "--trust-uid", "6"]))
    assert trusting.trust_uid == [5, 6]


@pytest.mark.parametrize(
    ("given", "hoisted"),
    [
        (["inspect", "--json", "train"], ["--json", "inspect", "train"]),
        (
            ["inspect", "--json", "--grace-period", "5", "train"],
            ["--json", "inspect", "--grace-period", "5", "train"],
        ),
        (["exec", "--socket", "/s", "--", "ls", "--json"], ["--socket", "/s", "exec", "--", "ls", "--json"]),
        (["--socket", "exec", "shell"], ["--socket", "exec", "shell"]),  # "exec" is the socket's name here
        (["shell", "--interval=2", "--json"], ["--interval=2", "--json", "shell"]),
    ],
)
def test_our_flags_after_a_command_line_verb_stop_where_the_command_line_starts(
    given: list[str], hoisted: list[str]
) -> None:
    """Only the flags right after exec/shell/inspect are ours; from the first other word (or ``--``) on,
    the words are the command line's, even one that looks like ours."""
    assert hoist_global_flags(given) == hoisted


def test_an_unknown_flag_after_the_verb_is_still_refused() -> None:
    """The twin: accepting our flags on both sides does not accept anything else (exit 2, named)."""
    done = debug_cli("status", "--no-such-flag")
    assert done.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in done.stderr


def test_inspect_with_json_after_the_verb_prints_json_and_keeps_smsupervises_options() -> None:
    """End to end: ``inspect --json --grace-period 7 -- true`` is the same JSON as with --json first, and
    --grace-period stays smsupervise's (the plan shows it)."""
    after = debug_cli("inspect", "--json", "--grace-period", "7", "--", "true")
    before = debug_cli("--json", "inspect", "--grace-period", "7", "--", "true")
    assert after.returncode == before.returncode == 0, after.stderr + before.stderr
    assert orjson.loads(after.stdout) == orjson.loads(before.stdout)
    assert b"7" in orjson.dumps(orjson.loads(after.stdout))
