"""Every knob declared once: flag ``--grace-period`` <-> env ``SMSUPERVISE_GRACE_PERIOD`` <->
default, parser and help (``OPTIONS``). ``cli`` parses the command line against it, ``--help`` and
the README's table come from it (a test checks), and ``settings.Settings`` resolves it.
"""

from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

from smsupervise import parsers

ForwardTo = Literal["group", "child"]
LogFormat = Literal["json", "text", "raw"]
LogLevel = Literal["debug", "info", "warning", "error"]
Mode = Literal["train", "serve", "exec"]
EventLoop = Literal["uvloop", "asyncio"]

ENV_PREFIX = "SMSUPERVISE_"


class Option(NamedTuple):
    """One knob, declared once: its flag, its environment variable, how to parse it, its default
    (per mode where the mode changes it) and its help text. ``--help`` and the README's table come
    from (or are checked against) these declarations."""

    name: str
    metavar: str | None  # None: a flag that takes no value
    parse: Callable[[str, str], object]
    default: object  # the value when neither flag nor variable is given (None: unset)
    help: str
    env_name: str | None = None  # when the variable is not SMSUPERVISE_<OPTION>
    by_mode: Mapping[str, object] = {}  # defaults that differ by mode, e.g. {"serve": 20.0}
    default_text: str | None = None  # how to describe a default that is computed, not a value

    @property
    def env(self) -> str:
        return self.env_name or ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def field(self) -> str:
        return self.name.replace("-", "_")

    def default_for(self, mode: Mode) -> object:
        """The default in ``mode``."""
        return self.by_mode.get(mode, self.default)

    def shown_default(self) -> str:
        """The default as ``--help`` and the README show it, e.g. ``100 (serve: 20)``."""
        if self.default_text is not None:
            return self.default_text
        text = _show(self.default, self.metavar is None)
        for mode, value in self.by_mode.items():
            text += f" ({mode}: {_show(value, self.metavar is None)})"
        return text


def _show(value: object, is_flag: bool) -> str:
    if value is None:
        return "none"
    if is_flag:
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int) and value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value >> 20}M"
    return str(value)


OPTIONS: tuple[Option, ...] = (
    Option(
        "base-dir",
        "DIR",
        parsers.directory,
        "/opt/ml",
        "SageMaker's base directory (config, data, code, model, output)",
        "SAGEMAKER_BASE_DIR",
    ),
    Option(
        "forward-to",
        "group|child",
        parsers.choice("group", "child"),
        "group",
        "send forwarded signals to the child's whole process group, or to the child only",
    ),
    Option(
        "grace-period",
        "SECONDS",
        parsers.seconds,
        100.0,
        "after SIGTERM/SIGINT reaches the child's group, wait this long before SIGKILLing it; "
        "without a value it is lowered as far as the stop must fit --stop-budget",
        by_mode={"serve": 20.0},
    ),
    Option(
        "checkpoint-hook",
        "CMD",
        parsers.text,
        None,
        "on a stop, run this command line (no shell; use sh -c '...' for one) while training keeps "
        "running, then go on to SIGTERM; it gets SMSUPERVISE_STOP_REASON and SMSUPERVISE_DEADLINE",
    ),
    Option(
        "checkpoint-signal",
        "SIG",
        parsers.signal_number,
        None,
        "on a stop, send this signal (e.g. USR1) to the training process group first; it saves and "
        "creates the file named in its SMSUPERVISE_CHECKPOINT_DONE, then smsupervise goes on",
    ),
    Option(
        "checkpoint-timeout",
        "SECONDS",
        parsers.seconds,
        60.0,
        "the longest the checkpoint step may take; a hook still running then is SIGKILLed",
        by_mode={"serve": 10.0},
    ),
    Option(
        "stop-budget",
        "SECONDS",
        parsers.seconds,
        120.0,
        "the whole stop must fit this (SageMaker SIGKILLs everything 120 s after SIGTERM; "
        "endpoints 30 s): the serve front's drain + checkpoint timeout + grace (twice with --also) + "
        "leftover grace + 5 s must not exceed it",
        by_mode={"serve": 30.0},
    ),
    Option(
        "max-runtime",
        "SECONDS",
        parsers.seconds,
        None,
        "stop the job this long after it started, as SIGTERM would, with reason MaxRuntimeExceeded "
        "(0: no limit)",
    ),
    Option(
        "leftover-grace",
        "SECONDS",
        parsers.seconds,
        5.0,
        "after the main child exits, wait this long for the rest to end after SIGTERM, then SIGKILL",
    ),
    Option(
        "log-format",
        "json|text|raw",
        parsers.choice("json", "text", "raw"),
        "json",
        "json: one JSON object per line; text: for people; raw: child output passed through untouched",
    ),
    Option(
        "merge-streams",
        None,
        parsers.boolean,
        False,
        "write the child's stderr records to our stdout too (one stream, in read order)",
    ),
    Option(
        "max-line-bytes",
        "BYTES",
        parsers.line_bytes,
        16384,
        "no output line is longer (SageMaker's shipper splits at 16 KiB); longer messages are "
        "split into parts marked `partial` (1024 to 1048550)",
    ),
    Option(
        "progress-interval",
        "SECONDS",
        parsers.seconds,
        10.0,
        "emit at most one `\\r` progress state (tqdm) per stream per interval; the last one before "
        "a newline is always kept",
    ),
    Option(
        "flush-after",
        "SECONDS",
        parsers.seconds,
        1.0,
        "emit a line that has no newline yet after this much silence (marked `eol: none`)",
    ),
    Option(
        "drain-timeout",
        "SECONDS",
        parsers.seconds,
        2.0,
        "after the main child exits, read its output until EOF for at most this long",
    ),
    Option(
        "pipe-relay",
        None,
        parsers.boolean,
        False,
        "relay Pipe-mode channels through smsupervise's zero-copy splice relay, with read-ahead: "
        "SM_CHANNEL_<CH> then points at the relay's FIFOs",
    ),
    Option(
        "pipe-buffer",
        "BYTES",
        parsers.byte_size,
        64 << 20,
        "read-ahead per Pipe channel (a ring of 1 MiB pipes), so the stream keeps flowing while "
        "the trainer computes",
    ),
    Option(
        "pipe-relay-dir",
        "DIR",
        parsers.directory,
        None,
        "where the relay's FIFOs <channel>_<N> go (also SMSUPERVISE_PIPE_DIR in the job)",
        default_text="a new directory under $TMPDIR",
    ),
    Option(
        "flush-timeout",
        "SECONDS",
        parsers.seconds,
        3.0,
        "after the job has exited and the outcome file is written, how long to keep writing output "
        "that our stdout/stderr reader has not taken yet; what is left is dropped and counted",
    ),
    Option(
        "fail-fast",
        "on|off",
        parsers.boolean,
        True,
        "distributed jobs: when the job on one host fails, stop it on every host within seconds "
        "(the supervisors' mesh on --cluster-port) instead of waiting for the NCCL/Gloo timeout",
        default_text="on",
    ),
    Option(
        "cluster-port",
        "PORT",
        parsers.tcp_port,
        7778,
        "distributed jobs: the TCP port of the supervisors' fail-fast mesh, the same on every host",
    ),
    Option(
        "peer-wait",
        "SECONDS",
        parsers.seconds,
        900.0,
        "distributed jobs: how long to wait for every host's name to resolve (the toolkit: 15 min)",
    ),
    Option(
        "peer-timeout",
        "SECONDS",
        parsers.seconds,
        30.0,
        "distributed jobs: a host whose smsupervise has joined the mesh and then says nothing (no "
        "heartbeat) for this long is presumed gone (partitioned, stopped) and fails the job; 0: never",
    ),
    Option(
        "ranks",
        "LIST|all",
        parsers.rank_list,
        None,
        "distributed jobs: show only these ranks' output on the console (e.g. 0); the failure "
        "reason still sees every rank",
        default_text="all",
    ),
    Option(
        "log-level",
        "debug|info|warning|error",
        parsers.choice("debug", "info", "warning", "error"),
        "info",
        "the least severe of smsupervise's own events that is written",
    ),
    Option(
        "control-socket",
        "PATH|none",
        parsers.socket_path,
        None,
        "the Unix socket smsupervise-debug talks to (owner-only); none: no socket",
        default_text="/run/smsupervise/control.sock, else $XDG_RUNTIME_DIR/smsupervise/, "
        "else /tmp/smsupervise-<uid>/",
    ),
    Option(
        "control-group",
        "GID",
        parsers.group_id,
        None,
        "this group may read status and logs over the control socket (not act); the socket becomes 0660",
    ),
    Option(
        "keep-alive-on-failure",
        "SECONDS",
        parsers.seconds,
        0.0,
        "when the job fails, write the outcome file, then stay up this long (reaping, control socket) "
        "so its leftovers can be inspected; smsupervise-debug release or SIGTERM ends it",
    ),
    Option(
        "event-loop",
        "uvloop|asyncio",
        parsers.choice("uvloop", "asyncio"),
        "uvloop",
        "the event loop: uvloop, or the standard library's asyncio loop (the test suite runs both)",
    ),
    Option(
        "source-max-bytes",
        "BYTES",
        parsers.byte_size,
        20 << 30,
        "the most bytes sagemaker_submit_directory may unpack to (counted as written: a zip bomb "
        "stops there, the whole source is refused)",
        default_text="20G",
    ),
    Option(
        "source-max-members",
        "COUNT",
        parsers.count,
        1_000_000,
        "the most files, directories and links the source archive may hold (more: refused whole)",
    ),
    Option(
        "serve-front",
        "on|off",
        parsers.boolean,
        False,
        "smsupervise listens on SAGEMAKER_BIND_TO_PORT (8080) itself, answers /ping truthfully from "
        "your server's health and drains on SIGTERM; your server gets another port in "
        "SAGEMAKER_BIND_TO_PORT (docs/serve.md)",
        default_text="off",
    ),
    Option(
        "serve-port",
        "PORT",
        parsers.tcp_port,
        None,
        "with --serve-front: the port your server listens on (told in SAGEMAKER_BIND_TO_PORT)",
        default_text="a free port of SAGEMAKER_SAFE_PORT_RANGE, else one the kernel picks",
    ),
    Option(
        "serve-health",
        "CHECK",
        parsers.health_check,
        parsers.HealthCheck("GET", "/ping"),
        "with --serve-front: the request whose 2xx answer means your server is ready: PATH, METHOD PATH, "
        "or METHOD PATH @FILE [CONTENT-TYPE] (a probe with a body)",
        default_text="GET /ping (or where --serve-map sends /ping)",
    ),
    Option(
        "serve-map",
        "FROM=TO,...",
        parsers.path_map,
        (),
        "with --serve-front: pass these request paths to your server under other names, e.g. "
        "/ping=/health,/invocations=/v1/chat/completions",
    ),
    Option(
        "serve-drain-delay",
        "SECONDS",
        parsers.seconds,
        5.0,
        "with --serve-front: on SIGTERM /ping answers 503 at once, and requests are still taken for "
        "this long (the load balancer's reaction time)",
    ),
    Option(
        "serve-drain-timeout",
        "SECONDS",
        parsers.seconds,
        10.0,
        "with --serve-front: then no new connections; requests in flight get this long to finish "
        "before your server gets its stop signal",
    ),
    Option(
        "serve-ping-summary",
        "SECONDS",
        parsers.seconds,
        60.0,
        "with --serve-front: successful /ping requests are counted into one `ping_summary` event per "
        "this interval instead of an access record each",
    ),
    Option(
        "also",
        "FILE",
        parsers.file_path,
        None,
        "run the processes declared in this JSON file beside the main program, as one service: each "
        "with its command, stop signal and restarts, essential by default (docs/serve.md)",
    ),
    Option(
        "sample-interval",
        "SECONDS",
        parsers.seconds,
        1.0,
        "how often the diagnosis samples the job's memory (RSS of every process, the cgroup's OOM "
        "counter) and filesystems (0: only at the start and the end)",
    ),
    Option(
        "exit-timeout",
        "SECONDS",
        parsers.seconds,
        300.0,
        "when this host's first rank has ended and the launcher still runs this long after, take "
        "the stacks of what is left and stop it: an exit hang (0: never)",
    ),
    Option(
        "exit-hang-fails",
        None,
        parsers.boolean,
        False,
        "an exit hang makes the job fail (class ExitHang); by default it succeeds, the model written",
    ),
)
OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
