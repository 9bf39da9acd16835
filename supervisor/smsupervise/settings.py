"""The resolved configuration (``Settings``): flags over environment variables over the defaults
of ``options.OPTIONS``, checked where a rule spans several fields; and ``Invocation``, what was asked
to run.
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

from smsupervise.errors import UsageError
from smsupervise.options import ENV_PREFIX, OPTIONS, EventLoop, ForwardTo, LogFormat, LogLevel, Mode
from smsupervise.parsers import HealthCheck

STOP_MARGIN = 5.0  # seconds kept free in the stop budget for SIGKILL, reaping and flushing


class Settings(NamedTuple):
    """The resolved configuration. Built once, before anything runs; never mutated.

    Every field is an option of ``OPTIONS`` (same name, ``-`` as ``_``); defaults live there only,
    so build it with ``Settings.from_sources`` (or ``Settings.defaults(mode)``)."""

    base_dir: str
    forward_to: ForwardTo
    grace_period: float
    checkpoint_hook: str | None
    checkpoint_signal: int | None
    checkpoint_timeout: float
    stop_budget: float
    max_runtime: float | None
    leftover_grace: float
    log_format: LogFormat
    merge_streams: bool
    max_line_bytes: int
    progress_interval: float
    flush_after: float
    drain_timeout: float
    pipe_relay: bool
    pipe_buffer: int
    pipe_relay_dir: str | None
    flush_timeout: float
    fail_fast: bool
    cluster_port: int
    peer_wait: float
    peer_timeout: float
    ranks: frozenset[int] | None
    log_level: LogLevel
    control_socket: str | None
    control_group: int | None
    keep_alive_on_failure: float
    event_loop: EventLoop
    source_max_bytes: int
    source_max_members: int
    serve_front: bool
    serve_port: int | None
    serve_health: HealthCheck
    serve_map: tuple[tuple[str, str], ...]
    serve_drain_delay: float
    serve_drain_timeout: float
    serve_ping_summary: float
    also: str | None
    sample_interval: float
    exit_timeout: float
    exit_hang_fails: bool

    @classmethod
    def from_sources(cls, flags: Mapping[str, object], env: Mapping[str, str], mode: Mode) -> "Settings":
        """Flags win over ``SMSUPERVISE_*`` variables, which win over the defaults for ``mode``."""
        values: dict[str, Any] = {}
        given: set[str] = set()
        for option in OPTIONS:
            if option.field in flags:
                values[option.field] = flags[option.field]
            elif option.env in env:
                values[option.field] = option.parse(env[option.env], f"environment variable {option.env}")
            else:
                values[option.field] = option.default_for(mode)
                continue
            given.add(option.field)
        if values["max_runtime"] == 0:
            values["max_runtime"] = None
        if "grace_period" not in given:
            room = values["stop_budget"] - _before_grace(values)
            # --also: its processes' stop takes a grace period of its own before the main program's
            values["grace_period"] = min(values["grace_period"], room / 2 if values["also"] else room)
        settings = cls(**values)
        settings.check_stop_budget()
        return settings

    @classmethod
    def defaults(cls, mode: Mode = "exec") -> "Settings":
        """Every option at its default for ``mode``."""
        return cls.from_sources({}, {}, mode)

    @property
    def checkpointing(self) -> bool:
        return self.checkpoint_hook is not None or self.checkpoint_signal is not None

    def check_stop_budget(self) -> None:
        """The whole stop must fit the budget: the front's drain (with --serve-front) + checkpoint
        timeout (when there is a checkpoint step) + grace + leftover grace + margin.

        SageMaker SIGKILLs a training container 120 s after SIGTERM and an endpoint 30 s after; a stop
        that cannot finish inside that loses the checkpoint it was for, so it is refused at start.
        """
        before_grace = _before_grace(self._asdict())
        grace, budget = self.grace_period, self.stop_budget
        if self.also is not None:  # the --also processes' stop has a grace period of its own
            before_grace += max(grace, 0)
        if grace >= 0 and before_grace + grace <= budget:
            return
        parts = [
            f"--grace-period {grace:g}",
            f"--leftover-grace {self.leftover_grace:g}",
            f"{STOP_MARGIN:g} s margin",
        ]
        if self.checkpointing:
            parts.insert(0, f"--checkpoint-timeout {self.checkpoint_timeout:g}")
        if self.also is not None:
            parts.insert(0, f"--grace-period {grace:g} (the --also processes' stop)")
        if self.serve_front:
            parts[:0] = [
                f"--serve-drain-delay {self.serve_drain_delay:g}",
                f"--serve-drain-timeout {self.serve_drain_timeout:g}",
            ]
        raise UsageError(
            f"the stop sequence cannot fit --stop-budget {budget:g} s ({ENV_PREFIX}STOP_BUDGET): "
            f"{' + '.join(parts)} = {before_grace + max(grace, 0):g} s. Lower --grace-period"
            f"{' or --checkpoint-timeout' if self.checkpointing else ''}"
            f"{' or the --serve-drain-* options' if self.serve_front else ''} "
            f"(or their {ENV_PREFIX}* variables), or "
            "raise --stop-budget if your platform waits longer before SIGKILL (SageMaker: 120 s for "
            "training, 30 s for endpoints)"
        )


def _before_grace(values: Mapping[str, Any]) -> float:
    """What the stop spends besides the grace period: the front's drain, the checkpoint step, the
    leftovers, the margin."""
    checkpointing = values["checkpoint_hook"] is not None or values["checkpoint_signal"] is not None
    timeout = float(values["checkpoint_timeout"]) if checkpointing else 0.0
    if values["serve_front"]:  # the front's drain comes before the server's stop signal
        timeout += float(values["serve_drain_delay"]) + float(values["serve_drain_timeout"])
    return timeout + float(values["leftover_grace"]) + STOP_MARGIN


class Invocation(NamedTuple):
    """What the command line asks for: the mode, the command or extra words, and the settings."""

    mode: Mode
    args: tuple[str, ...]  # the command (exec) or extra arguments (train/serve)
    settings: Settings
