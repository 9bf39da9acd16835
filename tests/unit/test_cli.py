"""The command line and its environment variables."""

from __future__ import annotations

import pytest

from smsupervise import cli
from smsupervise.errors import UsageError
from smsupervise.settings import OPTIONS, Settings


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
    assert cli.parse(["true"], {}).settings == Settings()


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


def test_main_reports_usage_errors_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option exits 2 with the message and the usage line on stderr."""
    assert cli.main(["--nope", "true"]) == 2
    err = capsys.readouterr().err
    assert "unknown option '--nope'" in err
    assert cli.USAGE in err
