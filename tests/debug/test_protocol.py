"""The control protocol against every shape of request, unit and live: any line decodes to a
well-formed request or is refused with a ProtocolError naming the field (never another
exception), and a real supervisor answers every such line with one ``{"ok": false, "error": ...}``
and writes no traceback into its event stream. Hypothesis draws the class: every operation, every
argument name (known and not), every JSON type for every value, non-objects, bad versions.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smsupervise.debug.control import HandlerError
from smsupervise.debug.protocol import (
    ARGUMENTS,
    MAX_LINE,
    OPERATIONS,
    ProtocolError,
    Request,
    Response,
    decode_request,
    decode_response,
)
from smsupervise.debug.service import _parse_signal
from tests.conftest import PYTHON, Supervised, events, init_prefix, sleep_until

ARG_NAMES = sorted({name for names in ARGUMENTS.values() for name in names})
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
OPS = st.sampled_from(sorted(OPERATIONS)) | st.text(max_size=12)
ARGS = st.dictionaries(st.sampled_from(ARG_NAMES) | st.text(max_size=8), JSON, max_size=4)
VERSIONS = st.just(1) | st.sampled_from([True, 1.0, "1", 2, 0, None, [1]])
RECORDS = st.fixed_dictionaries({"v": VERSIONS, "op": OPS | JSON, "args": ARGS | JSON})
LINES = RECORDS.map(lambda r: orjson.dumps(r) + b"\n") | JSON.map(lambda v: orjson.dumps(v) + b"\n")


def _well_formed(request: Request) -> None:
    """What the handlers rely on, checked independently of the decoder's own code."""
    args = request.args
    assert request.op in OPERATIONS
    assert set(args) <= set(ARGUMENTS[request.op])
    if request.op == "logs":
        assert args.get("follow") in (None, True, False)
        assert args.get("stream") in (None, "stdout", "stderr")
        lines = args.get("lines")
        assert lines is None or (type(lines) is int and lines >= 0)
        assert args.get("rank") is None or type(args["rank"]) in (int, str)
    if request.op == "exec":
        argv = args["argv"]
        assert isinstance(argv, list)
        assert argv
        assert all(isinstance(word, str) and "\0" not in word for word in argv)
    if request.op == "signal":
        assert type(args["signal"]) in (int, str)


@given(LINES)
@settings(max_examples=2000, deadline=None)
def test_any_line_is_a_well_formed_request_or_a_protocol_error(line: bytes) -> None:
    """decode_request raises nothing but ProtocolError, and what it returns is well-formed."""
    try:
        request = decode_request(line)
    except ProtocolError:
        return
    _well_formed(request)


@given(st.binary(max_size=200))
def test_any_bytes_are_a_request_or_a_protocol_error(line: bytes) -> None:
    """Not even JSON (bytes, NULs, bad UTF-8): still only ProtocolError."""
    with contextlib.suppress(ProtocolError):
        _well_formed(decode_request(line))


@pytest.mark.parametrize(
    ("line", "names"),
    [
        (b'{"v":1,"op":"logs","args":{"lines":[1]}}', ["'lines'", "whole number"]),
        (b'{"v":1,"op":"logs","args":{"lines":true}}', ["'lines'"]),
        (b'{"v":1,"op":"logs","args":{"follow":"yes"}}', ["'follow'"]),
        (b'{"v":1,"op":"exec","args":{"argv":5}}', ["'argv'", "list"]),
        (b'{"v":1,"op":"exec","args":{"argv":["a\\u0000b"]}}', ["'argv'", "NUL"]),
        (b'{"v":1,"op":"exec","args":{}}', ["needs the argument 'argv'"]),
        (b'{"v":1,"op":"signal","args":{"signal":[9]}}', ["'signal'"]),
        (b'{"v":1,"op":"status","args":{"x":1}}', ["no argument 'x'"]),
        (b'{"v":true,"op":"status"}', ["version"]),
        (b'{"v":1,"op":5}', ["unknown operation 5"]),
        (b"[1,2]", ["JSON object"]),
    ],
)
def test_the_named_shapes_are_refused_naming_the_field(line: bytes, names: list[str]) -> None:
    """The issue's examples and their neighbours: each refusal names the field and what it must be."""
    with pytest.raises(ProtocolError) as refused:
        decode_request(line)
    for name in names:
        assert name in str(refused.value)


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("status", {}),
        ("logs", {"follow": True, "stream": None, "rank": None, "lines": 50}),
        ("logs", {"rank": 3, "stream": "stderr", "lines": 0}),
        ("signal", {"signal": "USR1"}),
        ("signal", {"signal": 10}),
        ("exec", {"argv": ["sh", "-c", "echo ünïcode"]}),
        ("checkpoint", {}),
        ("release", {}),
    ],
)
def test_what_the_client_sends_is_accepted(op: str, args: dict[str, Any]) -> None:
    """The twin: every request the real client sends decodes unchanged."""
    assert decode_request(Request(op, args).encode()) == Request(op, args)


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("item", [_deep(300), 2**80, {"msg": "\udcff"}, {1: "non-str key"}])
def test_an_item_json_cannot_hold_is_sent_as_text(item: Any) -> None:
    """A job's JSON line too deep to encode again (or any value JSON cannot hold) never ends the
    stream: the item goes as its text; a result goes as an error."""
    line = Response(True, item=item).encode()
    decoded = decode_response(line)
    assert decoded.ok
    assert "encode_error" in decoded.item
    failed = decode_response(Response(True, result=item).encode())
    assert not failed.ok
    assert "not JSON" in (failed.error or "")


# -- live: a real supervisor, as a subreaper and as PID 1 ------------------------------------------


@pytest.fixture
def live(mode: str) -> Iterator[tuple[str, Path]]:
    """A supervised `sleep` with its control socket; its event stream goes to a file (read at the
    end). The job's PATH finds nothing, so no `exec` Hypothesis draws can run a program."""
    where = Path(tempfile.mkdtemp(prefix="pr", dir="/tmp"))
    sock = where / "c.sock"
    stderr = where / "events"
    nothing = ["/usr/bin/env", f"PATH={where / 'empty'}"]  # smsupervise's, so the job's and exec's
    argv = [*init_prefix(mode), *nothing, PYTHON, "-m", "smsupervise", "--control-socket", str(sock)]
    with stderr.open("wb") as err:
        run = Supervised(mode, [*argv, "/bin/sleep", "100000"], stderr=err, stdout=subprocess.DEVNULL)
    sleep_until(sock.exists, what="the control socket")
    try:
        yield str(sock), stderr
        run.signal(signal.SIGTERM)
        run.wait()
    finally:
        if run.proc.poll() is None:
            run.kill()
        import shutil

        shutil.rmtree(where, ignore_errors=True)


def _ask(path: str, line: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)  # a failure detector
        sock.connect(path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(line)  # refused before all of it was read: the answer is still there
        answer = sock.makefile("rb").readline()
    assert answer.endswith(b"\n"), f"no answer to {line[:200]!r}"
    record = orjson.loads(answer)
    assert record["v"] == 1
    return dict(record)


def _harmless(line: bytes) -> bool:
    """Requests that would really act on the job (a valid signal) or never end (logs -f)."""
    try:
        request = decode_request(line)
    except ProtocolError:
        return True
    if request.op == "signal":
        try:
            _parse_signal(str(request.args["signal"]))
        except HandlerError:
            return True
        return False
    return not (request.op == "logs" and request.args.get("follow"))


def _no_traceback(stderr: Path) -> None:
    text = stderr.read_bytes()
    assert b"Traceback" not in text
    for line in text.splitlines():
        assert line.startswith(b"{"), line
    assert "control_request_failed" not in [e["event"] for e in events(text)]


def test_a_live_supervisor_answers_every_shape_of_request(live: tuple[str, Path]) -> None:
    """Hypothesis over the protocol's fields and types, against a real supervisor: one answer line
    each, an error with words when refused; no traceback in the event stream, and it still serves."""
    path, stderr = live

    @given(LINES)
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def check(line: bytes) -> None:
        assume(_harmless(line))
        answer = _ask(path, line)
        if not answer["ok"]:
            assert isinstance(answer["error"], str)
            assert answer["error"]

    check()
    for line in (
        b'{"v":1,"op":"logs","args":{"lines":[1]}}\n',
        b'{"v":1,"op":"exec","args":{"argv":5}}\n',
        b'{"v":1,"op":"exec","args":{"argv":["a\\u0000b"]}}\n',
        b'{"v":1,"op":"signal","args":{"signal":"\xc2\xb2"}}\n',
        b"[]\n",
        b'{"v":1,"op":"shutdown"}\n',
        b'{"v":1,"op":"status","pad":"' + b"x" * (MAX_LINE + 10) + b'"}\n',
    ):
        answer = _ask(path, line)
        assert answer["ok"] is False, answer
    assert _ask(path, Request("status", {}).encode())["ok"] is True
    _no_traceback(stderr)
