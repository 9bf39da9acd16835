"""How an option's text (a flag's value or an environment variable) becomes a value: one parser
per kind, each raising ``UsageError`` that names where the text came from (``source``) and the fix."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable
from typing import NamedTuple

from smsupervise.errors import UsageError


def seconds(value: str, source: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"{source}: {value!r} is not a number of seconds; use e.g. 30 or 2.5") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"{source}: {value!r} must be a finite number of seconds >= 0")
    return seconds


def byte_size(value: str, source: str) -> int:
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in units else ""
    number = text[: len(text) - len(unit)]
    try:
        size = int(float(number) * units[unit])
    except ValueError:
        raise UsageError(
            f"{source}: {value!r} is not a size; use bytes or a suffix, e.g. 16384, 64K, 1M"
        ) from None
    if size <= 0:
        raise UsageError(f"{source}: {value!r} must be a positive size")
    return size


def signal_number(value: str, source: str) -> int:
    text = value.strip().upper()
    if text.isdigit():
        number = int(text)
    else:
        name = text if text.startswith("SIG") else f"SIG{text}"
        try:
            number = int(signal.Signals[name])
        except KeyError:
            raise UsageError(f"{source}: {value!r} is not a signal name; use e.g. USR1 or SIGUSR2") from None
    if number in (signal.SIGKILL, signal.SIGSTOP) or number not in signal.valid_signals():
        raise UsageError(f"{source}: {value!r} cannot be caught by a program; use e.g. USR1")
    return number


def boolean(value: str, source: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"{source}: {value!r} is not a boolean; use 1 or 0")


def choice(*choices: str) -> Callable[[str, str], str]:
    def parse(value: str, source: str) -> str:
        if value not in choices:
            raise UsageError(f"{source}: {value!r} is not one of {', '.join(choices)}")
        return value

    return parse


def line_bytes(value: str, source: str) -> int:
    size = byte_size(value, source)
    if not 1024 <= size <= 1048550:
        raise UsageError(
            f"{source}: {size} is out of range; use 1024 to 1048550 "
            "(CloudWatch's event limit is 1 MiB - 26 bytes)"
        )
    return size


def directory(value: str, source: str) -> str:
    """A directory, made absolute at once (smsupervise later moves its own cwd to /)."""
    return os.path.abspath(text(value, source))


def socket_path(value: str, source: str) -> str:
    """A socket path made absolute at once (smsupervise moves its cwd to / before it binds), or
    ``none``."""
    given = text(value, source)
    return given if given == "none" else os.path.abspath(given)


def file_path(value: str, source: str) -> str:
    """A file, made absolute at once (smsupervise later moves its own cwd to /)."""
    return os.path.abspath(text(value, source))


def group_id(value: str, source: str) -> int:
    import grp  # noqa: PLC0415 - only when the option is given

    if value.strip().isdigit():
        return int(value)
    try:
        return grp.getgrnam(value.strip()).gr_gid
    except KeyError:
        raise UsageError(f"{source}: {value!r} is not a group name or number; use e.g. 1000") from None


def tcp_port(value: str, source: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= 65535:
        raise UsageError(f"{source}: {value!r} is not a TCP port; use 1 to 65535, e.g. 7778")
    return int(value)


def rank_list(value: str, source: str) -> frozenset[int] | None:
    text = value.strip().lower()
    if text in ("", "all"):
        return None
    try:
        return frozenset(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{source}: {value!r} is not a list of ranks; use e.g. 0 or 0,8 or all") from None


def count(value: str, source: str) -> int:
    try:
        count = int(value.strip().replace("_", ""))
    except ValueError:
        raise UsageError(f"{source}: {value!r} is not a whole number; use e.g. 1000000") from None
    if count <= 0:
        raise UsageError(f"{source}: {value!r} must be a positive number")
    return count


def text(value: str, source: str) -> str:
    if not value.strip():
        raise UsageError(f"{source}: must not be empty")
    return value


class HealthCheck(NamedTuple):
    """``--serve-health``: the request that says the server is ready (a 2xx answer)."""

    method: str
    path: str
    body_file: str | None = None  # the probe's body, read when the front starts
    content_type: str | None = None


_HEALTH_FORMS = "use a path (/ping), METHOD PATH (GET /health), or METHOD PATH @FILE [CONTENT-TYPE]"


def health_check(value: str, source: str) -> HealthCheck:
    words = value.split()
    if len(words) == 1:
        words = ["GET", *words]
    if not 2 <= len(words) <= 4 or not words[1].startswith("/") or not words[0].isalpha():
        raise UsageError(f"{source}: {value!r} is not a health check; {_HEALTH_FORMS}")
    body = words[2] if len(words) > 2 else None
    if body is not None and (not body.startswith("@") or len(body) < 2):
        raise UsageError(f"{source}: the body {body!r} must name a file as @FILE; {_HEALTH_FORMS}")
    content_type = words[3] if len(words) > 3 else None
    return HealthCheck(words[0].upper(), words[1], os.path.abspath(body[1:]) if body else None, content_type)


def path_map(value: str, source: str) -> tuple[tuple[str, str], ...]:
    """``/ping=/health,/invocations=/v1/chat/completions``: each FROM path to a TO path."""
    pairs: list[tuple[str, str]] = []
    for part in value.split(","):
        if not part.strip():
            continue
        origin, sep, target = part.strip().partition("=")
        if not sep or not origin.startswith("/") or not target.startswith("/"):
            raise UsageError(
                f"{source}: {part.strip()!r} is not a path mapping; use FROM=TO with both paths "
                "starting with /, e.g. /ping=/health,/invocations=/v1/chat/completions"
            )
        if any(origin == seen for seen, _ in pairs):
            raise UsageError(f"{source}: {origin} is mapped twice; map each path once")
        pairs.append((origin, target))
    return tuple(pairs)
