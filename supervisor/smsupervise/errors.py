"""The errors a user sees. Each renders a message that names what is wrong and how to fix it."""

from __future__ import annotations


class SupervisorError(Exception):
    """Base class: an error smsupervise reports and exits on, with a fixed exit code."""

    exit_code = 70

    def message(self) -> str:
        """The text shown to the user (and copied into the failure file where it applies)."""
        return str(self)


class UsageError(SupervisorError):
    """A bad command line or environment variable (exit 2)."""

    exit_code = 2


class ConfigError(SupervisorError):
    """A configuration file that cannot be used (exit 2): names the file, the field and the fix."""

    exit_code = 2

    def __init__(self, path: str, field: str, problem: str, hint: str = "") -> None:
        self.path = path
        self.field = field
        self.problem = problem
        self.hint = hint
        super().__init__(self.message())

    def message(self) -> str:
        where = f"{self.path}: field '{self.field}'" if self.field else self.path
        text = f"{where}: {self.problem}"
        return f"{text}. {self.hint}" if self.hint else text


class SpawnError(SupervisorError):
    """The program could not be started: 127 when it is not found, 126 when it cannot be executed."""

    def __init__(self, program: str, problem: str, exit_code: int) -> None:
        self.program = program
        self.problem = problem
        self.exit_code = exit_code
        super().__init__(f"{program}: {problem}")
