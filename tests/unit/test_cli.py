"""The command line and its environment variables."""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from smsupervise import cli
from smsupervise.core import signals
from smsupervise.errors import UsageError
from smsupervise.options import OPTIONS, OPTIONS_BY_NAME, Option
from smsupervise.settings import Settings


def test_option_parsing_stops_at_the_first_non_option() -> None:
    """`smsupervise ls -l` runs `ls -l`: options after the command belong to the command."""
    inv = cli.parse(["--grace-period", "3", "ls", "-l", "--grace-period", "9"], {})
    assert inv.mode == "exec"
    assert inv.args == ("ls", "-l", "--grace-period", "9")
    assert inv.settings.grace_period == 3.0


def test_train_and_serve_are_reserved_only_as_the_first_word() -> None:
    """`train`/`serve` select a mode; after `--` they are plain commands; elsewhere arguments."""
    assert cli.parse(["train"], {}).mode == "train"
    assert cli.parse(["serve", "--port", "8080"], {}).args == ("--port", "8080")
    forced = cli.parse(["--", "train"], {})
    assert (forced.mode, forced.args) == ("exec", ("train",))
    assert cli.parse(["echo", "train"], {}).mode == "exec"


def test_flag_wins_over_environment_which_wins_over_default() -> None:
    """Each option reads SMSUPERVISE_<OPTION>; the flag wins when both are set."""
    env = {"SMSUPERVISE_GRACE_PERIOD": "7", "SMSUPERVISE_FORWARD_TO": "child"}
    assert cli.parse(["true"], env).settings.grace_period == 7.0
    assert cli.parse(["--grace-period=2", "true"], env).settings.grace_period == 2.0
    assert cli.parse(["true"], env).settings.forward_to == "child"
    defaults = cli.parse(["true"], {}).settings
    assert defaults == Settings.defaults("exec")
    assert defaults._asdict() == {option.field: option.default_for("exec") for option in OPTIONS}


def test_every_settings_field_is_one_option_and_the_reverse() -> None:
    """One declaration per knob: the Settings record and the option table name the same fields."""
    assert list(Settings._fields) == [option.field for option in OPTIONS]


def test_mode_dependent_defaults_come_from_the_option_table() -> None:
    """serve's shorter stop budget and checkpoint timeout are the table's by_mode values."""
    serve = Settings.defaults("serve")
    train = Settings.defaults("train")
    assert serve.stop_budget == OPTIONS_BY_NAME["stop-budget"].by_mode["serve"] == 30
    assert train.stop_budget == OPTIONS_BY_NAME["stop-budget"].default == 120
    assert serve.checkpoint_timeout == 10
    assert train.checkpoint_timeout == 60


def test_the_grace_default_shrinks_to_fit_the_budget_but_a_given_grace_is_checked() -> None:
    """Without --grace-period the default is lowered to fit; a given one that does not fit is refused."""
    hook = {"SMSUPERVISE_CHECKPOINT_HOOK": "true"}
    assert cli.parse(["train"], hook).settings.grace_period == 120 - 60 - 5 - 5
    with pytest.raises(UsageError, match="cannot fit --stop-budget 120"):
        cli.parse(["--grace-period", "100", "train"], hook)


def test_the_event_loop_is_an_option_with_its_variable() -> None:
    """SMSUPERVISE_EVENT_LOOP is read through the table like every other knob."""
    assert cli.parse(["true"], {}).settings.event_loop == "uvloop"
    assert cli.parse(["true"], {"SMSUPERVISE_EVENT_LOOP": "asyncio"}).settings.event_loop == "asyncio"
    with pytest.raises(UsageError, match="not one of uvloop, asyncio"):
        cli.parse(["true"], {"SMSUPERVISE_EVENT_LOOP": "trio"})


def _readme_option_rows() -> dict[str, tuple[str, str]]:
    """The README's options table: flag name -> (variable cell, default cell)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("### Options and environment variables", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        match = re.match(r"`--([a-z-]+)", cells[0]) if len(cells) >= 4 else None
        if match:
            assert match.group(1) not in rows, f"--{match.group(1)} has two rows in the README"
            rows[match.group(1)] = (cells[1], cells[2])
    return rows


def _readme_mismatches(options: tuple[Option, ...]) -> list[str]:
    """Options the README's table leaves out, or documents with another variable or default."""
    rows = _readme_option_rows()
    problems = [
        f"--{name} is in the README but not an option" for name in set(rows) - {o.name for o in options}
    ]
    for option in options:
        if option.name not in rows:
            problems.append(f"--{option.name} is not in the README")
            continue
        variable, default = rows[option.name]
        if option.env not in variable:
            problems.append(f"--{option.name}: README variable {variable!r}, table {option.env!r}")
        for value in re.findall(r"[\w$./]+", option.shown_default()):
            if value not in default:
                problems.append(f"--{option.name}: default {value!r} is not in the README's {default!r}")
    return problems


def test_the_readme_table_matches_the_option_table() -> None:
    """The README documents every option with its variable and each of its default values."""
    assert _readme_mismatches(OPTIONS) == []


def test_the_readme_check_bites_on_a_wrong_default_or_a_missing_option() -> None:
    """The negative twin: a changed default, and an option the README lacks, are both caught."""
    changed = tuple(o._replace(default=7777.0) if o.name == "grace-period" else o for o in OPTIONS)
    assert any("'7777'" in problem for problem in _readme_mismatches(changed))
    extra = (*OPTIONS, OPTIONS[0]._replace(name="new-knob"))
    assert "--new-knob is not in the README" in _readme_mismatches(extra)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SMSUPERVISE_MAX_LINE_BYTES": "10"}, "out of range; use 1024 to 1048550"),
        ({"SMSUPERVISE_MAX_LINE_BYTES": "2G"}, "out of range"),
        ({"SMSUPERVISE_PIPE_BUFFER": "lots"}, "is not a size"),
        ({"SMSUPERVISE_PIPE_BUFFER": "0"}, "must be a positive size"),
        ({"SMSUPERVISE_CHECKPOINT_SIGNAL": "KILL"}, "cannot be caught"),
        ({"SMSUPERVISE_CHECKPOINT_SIGNAL": "SIGNOPE"}, "is not a signal name"),
        ({"SMSUPERVISE_MERGE_STREAMS": "maybe"}, "is not a boolean"),
        ({"SMSUPERVISE_CHECKPOINT_HOOK": "  "}, "must not be empty"),
        ({"SMSUPERVISE_GRACE_PERIOD": "inf"}, "finite number of seconds"),
    ],
)
def test_each_parser_refuses_bad_values_by_name(env: dict[str, str], needle: str) -> None:
    """Sizes, signals, booleans, text and seconds each refuse a bad value and say how to fix it."""
    with pytest.raises(UsageError) as raised:
        cli.parse(["true"], env)
    assert needle in raised.value.message()
    assert next(iter(env)) in raised.value.message()


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ({"SMSUPERVISE_PIPE_BUFFER": "16M"}, "pipe_buffer", 16 << 20),
        ({"SMSUPERVISE_PIPE_BUFFER": "64KiB"}, "pipe_buffer", 64 << 10),
        ({"SMSUPERVISE_MAX_LINE_BYTES": "2048"}, "max_line_bytes", 2048),
        ({"SMSUPERVISE_CHECKPOINT_SIGNAL": "usr1"}, "checkpoint_signal", 10),
        ({"SMSUPERVISE_CHECKPOINT_SIGNAL": "12"}, "checkpoint_signal", 12),
        ({"SMSUPERVISE_MERGE_STREAMS": "yes"}, "merge_streams", True),
        ({"SMSUPERVISE_MAX_RUNTIME": "0"}, "max_runtime", None),
    ],
)
def test_each_parser_accepts_the_documented_forms(env: dict[str, str], field: str, value: object) -> None:
    """The twin of the refusals: the documented forms parse to the intended values."""
    assert getattr(cli.parse(["true"], env).settings, field) == value


def test_serve_defaults_to_a_grace_that_fits_the_30s_endpoint_budget() -> None:
    """Endpoints are SIGKILLed 30 s after SIGTERM, so serve's default grace is shorter."""
    assert cli.parse(["serve"], {}).settings.grace_period < 30
    assert cli.parse(["train"], {}).settings.grace_period == 100


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--grace-period", "soon", "true"], {}, "option --grace-period: 'soon' is not a number"),
        (["true"], {"SMSUPERVISE_GRACE_PERIOD": "-1"}, "environment variable SMSUPERVISE_GRACE_PERIOD"),
        (["--forward-to", "parent", "true"], {}, "not one of group, child"),
        (["--yolo", "true"], {}, "unknown option '--yolo'"),
        (["--grace-period"], {}, "needs a value"),
        ([], {}, "nothing to run"),
    ],
)
def test_bad_input_names_the_option_or_variable(argv: list[str], env: dict[str, str], needle: str) -> None:
    """A bad value is a UsageError (exit 2) whose message names where it came from."""
    with pytest.raises(UsageError) as raised:
        cli.parse(argv, env)
    assert needle in raised.value.message()
    assert raised.value.exit_code == 2


def test_help_lists_every_option_with_its_variable() -> None:
    """--help documents each flag beside its environment variable and default."""
    text = cli.help_text()
    for option in OPTIONS:
        assert f"--{option.name}" in text
        assert option.env in text


@pytest.fixture
def dispositions() -> Iterator[None]:
    """``cli.main`` gives every catchable signal a handler in this process, first thing (as PID 1
    it must): put each back after the test, or a later test that needs a signal nobody catches
    (tests/aio/test_relay.py's SIGURG twin) finds it caught."""
    saved = {signum: signal.getsignal(signum) for signum in signals.catchable()}
    yield
    for signum, handler in saved.items():
        if handler is not None:  # None: set outside Python (faulthandler); cli.main does not touch it
            with contextlib.suppress(OSError, ValueError):  # glibc-reserved real-time signals
                signal.signal(signum, handler)


def test_main_reports_usage_errors_with_exit_2(
    capsys: pytest.CaptureFixture[str], dispositions: None
) -> None:
    """An unknown option exits 2 with the message and the usage line on stderr."""
    assert cli.main(["--nope", "true"]) == 2
    err = capsys.readouterr().err
    assert "unknown option '--nope'" in err
    assert cli.USAGE in err
