"""The control server on a real Unix socket, served by a real event loop (stdlib and uvloop), with
real peer credentials: clients of other uids run under ``setpriv``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvloop

from smsupervise.core.spawn import LaunchSpec, spawn
from smsupervise.debug import client
from smsupervise.debug.control import ControlServer, Handler, HandlerError, Peer, Policy
from smsupervise.debug.listener import bind, candidate_paths, choose_and_bind, private_dir
from smsupervise.debug.protocol import Request
from smsupervise.errors import UsageError
from tests.conftest import PYTHON, fd_targets, readable_pythonpath, sleep_until

OTHER_UID = 1000
NEEDS_SETPRIV = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (util-linux)"
)


async def _numbers(args: Mapping[str, Any], peer: Peer) -> AsyncIterator[Any]:
    for number in range(int(args.get("lines") or 3)):
        yield {"n": number}


def _refuse(args: Mapping[str, Any], peer: Peer) -> Any:
    raise HandlerError("no checkpoint step is configured: start smsupervise with --checkpoint-hook")


def _handlers(acted: list[Mapping[str, Any]]) -> dict[str, Handler]:
    def act(args: Mapping[str, Any], peer: Peer) -> Any:
        acted.append(dict(args))
        size = args["signal"]  # a number here: an answer of that many bytes
        return {"message": "sent", **({"blob": "x" * size} if isinstance(size, int) else {})}

    return {
        "status": Handler(answer=lambda args, peer: {"supervisor": {"pid": os.getpid()}, "peer": peer.uid}),
        "logs": Handler(stream=_numbers),
        "signal": Handler(answer=act),
        "checkpoint": Handler(answer=_refuse),
    }


class Served:
    """A ControlServer running on its own loop in a thread; the test talks to it as a client."""

    def __init__(self, path: str, policy: Policy, loop_name: str) -> None:
        self.acted: list[Mapping[str, Any]] = []
        self.loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
        self.sock = bind(path, os.getuid())
        self.server = ControlServer(self.sock, policy, _handlers(self.acted))
        self.path = path
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(self.server.start)
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.aclose(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., Served]]:
    """Start a server at a fresh path (in a directory other uids may enter) with the given policy."""
    started: list[Served] = []
    tmp_path = Path(tempfile.mkdtemp(prefix="smsupervise-test-"))
    tmp_path.chmod(0o755)

    def start(policy: Policy | None = None, name: str = "control.sock") -> Served:
        served = Served(str(tmp_path / name), policy or Policy(os.getuid()), str(request.param))
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
    shutil.rmtree(tmp_path)
    gc.collect()  # an unclosed transport is reported against this test, not a later one


def _as_other(
    path: str, op: str, uid: int = OTHER_UID, gid: int = OTHER_UID
) -> subprocess.CompletedProcess[str]:
    """Run the real client as another uid/gid against ``path``."""
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            PYTHON,
            "-m",
            "smsupervise.debug",
            "--socket",
            path,
            "--json",
            *op.split(),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PYTHONPATH": readable_pythonpath()},
    )


def test_status_answers_with_the_peer_seen_by_the_kernel(serve: Callable[..., Served]) -> None:
    """One request, one response, and the server saw our own uid through SO_PEERCRED."""
    served = serve()
    result = client.call(served.path, "status")
    assert result == {"supervisor": {"pid": os.getpid()}, "peer": os.getuid()}


def _hold_loop(served: Served) -> threading.Event:
    """Keep the server's loop busy in one callback until the returned event is set."""
    release, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(10)

    served.loop.call_soon_threadsafe(hold)
    assert holding.wait(10)
    return release


def test_a_request_already_there_is_answered_in_the_accept_callback(serve: Callable[..., Served]) -> None:
    """A request that is waiting when the connection is accepted is answered at once, no task."""
    served = serve()
    release = _hold_loop(served)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(served.path)
        sock.sendall(Request("status", {}).encode())
        release.set()
        answer = sock.makefile("rb").readline()
    assert b'"peer":' in answer
    assert served.server.answered_at_once == 1


def test_a_request_sent_after_the_accept_is_answered_when_it_arrives(serve: Callable[..., Served]) -> None:
    """A client that sends only once its connection was accepted is answered in the callback that
    sees its request arrive, still without a task."""
    served = serve()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(served.path)
        sleep_until(lambda: served.server._waiting, what="the accepted connection")
        sock.sendall(Request("status", {}).encode())
        answer = sock.makefile("rb").readline()
    assert b'"peer":' in answer
    assert served.server.answered_at_once == 1


def test_a_request_cut_in_two_is_served_by_the_connection_task(serve: Callable[..., Served]) -> None:
    """The twin: a request whose first bytes come without its end is read by the connection's
    task, which answers it the same."""
    served = serve()
    line = Request("status", {}).encode()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(served.path)
        sleep_until(lambda: served.server._waiting, what="the accepted connection")
        sock.sendall(line[:5])
        sleep_until(lambda: served.server._tasks, what="the connection's task")
        sock.sendall(line[5:])
        answer = sock.makefile("rb").readline()
    assert b'"peer":' in answer
    assert served.server.answered_at_once == 0


def test_an_answer_larger_than_the_socket_buffer_arrives_whole(serve: Callable[..., Served]) -> None:
    """An answer given at once but too big for one send is sent on as the client reads it."""
    served = serve()
    release = _hold_loop(served)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(served.path)
        sock.sendall(Request("signal", {"signal": 8 << 20}).encode())
        release.set()
        answer = sock.makefile("rb").readline()
    assert answer.count(b"x") == 8 << 20
    assert answer.endswith(b"}\n")
    assert served.server.answered_at_once == 1


def test_a_stream_ends_with_end(serve: Callable[..., Served]) -> None:
    """A following operation yields every item and stops at the end marker."""
    served = serve()
    items = [r.item for r in client.exchange(served.path, Request("logs", {"lines": 4}))]
    assert items == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]


def test_a_handler_error_reaches_the_client_verbatim(serve: Callable[..., Served]) -> None:
    """The client shows the server's reason, which names the fix."""
    served = serve()
    with pytest.raises(client.ClientError, match="start smsupervise with --checkpoint-hook"):
        client.call(served.path, "checkpoint")


def test_an_operation_not_served_in_this_run_is_named(serve: Callable[..., Served]) -> None:
    """A known operation without a handler (release without keep-alive) says so."""
    served = serve()
    with pytest.raises(client.ClientError, match="'release' is not available in this run"):
        client.call(served.path, "release")


def test_wrong_version_and_unknown_operation_are_refused(serve: Callable[..., Served]) -> None:
    """A v2 request and an unknown op get errors naming what this server speaks."""
    served = serve()
    for line, expected in (
        (b'{"v":2,"op":"status"}\n', b"speaks v1"),
        (b'{"v":1,"op":"reboot"}\n', b"known: checkpoint, exec, logs, release, signal, status"),
        (b"not json\n", b"not a JSON line"),
    ):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(served.path)
            sock.sendall(line)
            answer = sock.makefile("rb").readline()
        assert b'"ok":false' in answer
        assert expected in answer, answer


def test_the_socket_is_owner_only(serve: Callable[..., Served]) -> None:
    """The socket file is mode 0600; a default directory is made 0700 and checked."""
    served = serve()
    assert stat.S_IMODE(os.stat(served.path).st_mode) == 0o600


def test_a_foreign_private_dir_is_refused(tmp_path: Path) -> None:
    """A directory someone else may write into is not used for the socket, and the error says why."""
    shared = tmp_path / "smsupervise"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(UsageError, match="not a private directory"):
        private_dir(str(shared), os.getuid())
    mine = tmp_path / "mine"
    private_dir(str(mine), os.getuid())  # the negative twin: a fresh one is made and accepted
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700


def test_a_live_socket_is_not_taken_over(serve: Callable[..., Served]) -> None:
    """A second supervisor on the same path is refused; a stale socket file would be replaced."""
    served = serve()
    with pytest.raises(UsageError, match="in use by another running smsupervise"):
        bind(served.path, os.getuid())


@NEEDS_SETPRIV
def test_another_uid_is_refused_by_the_file_mode(serve: Callable[..., Served]) -> None:
    """uid 1000 cannot even connect to the 0600 socket; the client names the owner and the fix."""
    served = serve()
    done = _as_other(served.path, "status")
    assert done.returncode == 1
    assert "owner-only (uid 0); run smsupervise-debug as uid 0 or root" in done.stderr


@NEEDS_SETPRIV
def test_another_uid_is_refused_by_peer_credentials(serve: Callable[..., Served]) -> None:
    """With the file opened up, SO_PEERCRED still refuses uid 1000, with a clear error."""
    served = serve()
    os.chmod(served.path, 0o666)  # noqa: S103 - opened up on purpose: the kernel check must hold alone
    done = _as_other(served.path, "status")
    assert done.returncode == 1
    assert "permission denied: uid 1000 may not use this supervisor's control socket" in done.stderr


@NEEDS_SETPRIV
def test_a_reader_can_read_but_not_act(serve: Callable[..., Served]) -> None:
    """A peer of the reader group gets status; its signal is refused and never reaches the handler."""
    served = serve(Policy(os.getuid(), reader_gid=OTHER_UID))
    os.chmod(served.path, 0o666)  # noqa: S103 - opened up on purpose: the kernel check must hold alone
    read = _as_other(served.path, "status")
    assert read.returncode == 0, read.stderr
    assert '"peer": 1000' in read.stdout
    act = _as_other(served.path, "signal USR1")
    assert act.returncode == 1
    assert "may read status and logs but not act" in act.stderr
    assert served.acted == []
    assert client.call(served.path, "signal", signal="USR1") == {"message": "sent"}  # the owner may
    assert served.acted == [{"signal": "USR1"}]


def test_the_socket_fd_does_not_reach_a_spawned_child(serve: Callable[..., Served]) -> None:
    """A child spawned while the server listens holds no fd to the control socket."""
    served = serve()
    inode = os.fstat(served.sock.fileno()).st_ino
    child = spawn(LaunchSpec(("sleep", "30"), os.environ))
    try:
        sleep_until(lambda: os.listdir(f"/proc/{child.pid}/fd"), what="the child's fds")
        assert f"socket:[{inode}]" not in fd_targets(child.pid)
        mine = fd_targets(os.getpid())
        assert f"socket:[{inode}]" in mine  # the negative twin: the fd is there to leak
    finally:
        child.send(9)
        os.waitpid(child.pid, 0)
        child.close()


def _occupy(paths: list[str]) -> list[socket.socket]:
    """A live listener at each path that nobody serves yet (one already served stays taken)."""
    held = []
    for path in paths:
        with contextlib.suppress(UsageError):
            held.append(bind(path, os.getuid(), private=True))
    return held


def test_with_every_shared_default_taken_the_socket_gets_a_name_of_its_own(tmp_path: Path) -> None:
    """Other smsupervise processes sharing /run and /tmp hold every shared name: this one binds
    control-<pid>.sock instead of running without a socket."""
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    *shared, own = candidate_paths(env, os.getuid(), os.getpid())
    held = _occupy(shared)
    sock = choose_and_bind(None, env, os.getuid())
    try:
        assert sock is not None
        assert sock.getsockname() == own
        assert own.endswith(f"/control-{os.getpid()}.sock")
    finally:
        for listener in [*held, *([sock] if sock else [])]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listener.getsockname())
            listener.close()


def test_with_a_shared_default_free_the_socket_takes_it(tmp_path: Path) -> None:
    """The negative twin: $XDG_RUNTIME_DIR's name is free (a directory of this test's), so the
    socket takes a shared name there or in /run, never the per-process one."""
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    sock = choose_and_bind(None, env, os.getuid())
    try:
        assert sock is not None
        assert sock.getsockname() in candidate_paths(env, os.getuid(), os.getpid())[:-1]
    finally:
        if sock is not None:
            os.unlink(sock.getsockname())
            sock.close()


def _count_tasks(served: Served) -> list[int]:
    """Count every task created on the server's loop from now on (its task factory)."""
    created = [0]
    done = threading.Event()

    def install() -> None:
        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            created[0] += 1
            return asyncio.Task(coro, loop=loop, **kwargs)

        served.loop.set_task_factory(factory)  # type: ignore[arg-type]
        done.set()

    served.loop.call_soon_threadsafe(install)
    assert done.wait(10)
    return created


def test_empty_connections_cost_no_task(serve: Callable[..., Served]) -> None:
    """A connect/close loop: every connection is accepted and closed by the server without a task
    (no StreamReader, no coroutine), so it cannot starve the loop's other work."""
    served = serve()
    created = _count_tasks(served)
    for _ in range(300):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(served.path)
    sleep_until(lambda: not served.server._open and not served.server._waiting, what="all closed")
    assert created[0] == 0
    assert client.call(served.path, "status")["peer"] == os.getuid()  # and it still serves


def test_a_request_cut_in_two_still_gets_a_task(serve: Callable[..., Served]) -> None:
    """The twin: a connection that did send part of a request is served by a task, as before."""
    served = serve()
    created = _count_tasks(served)
    line = Request("status", {}).encode()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(served.path)
        sleep_until(lambda: served.server._waiting, what="the accepted connection")
        sock.sendall(line[:5])
        sleep_until(lambda: created[0], what="the connection's task")
        sock.sendall(line[5:])
        assert b'"peer":' in sock.makefile("rb").readline()


def test_a_connection_without_a_request_is_closed_after_the_timeout(serve: Callable[..., Served]) -> None:
    """Connected and silent (or a request never finished): closed by the server, nothing
    answered, within a few seconds; the server counts it."""
    served = serve()
    for part in (b"", b'{"v":1,'):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(served.path)
            sock.sendall(part)
            sock.settimeout(60)  # a failure detector: the server's timeout is far shorter
            assert sock.recv(100) == b""
    assert served.server.timed_out == 1  # the silent one; the other was its task's to close
    sleep_until(lambda: not served.server._open, what="both forgotten")


def _hold(path: str, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        held.append(sock)
    return held


def test_connections_of_one_process_are_bounded(serve: Callable[..., Served]) -> None:
    """One process holding connections: beyond its bound, each new one is told why and closed; the
    ones it holds are served; closing them frees the room."""
    served = serve()
    limits = served.server.limits
    held = _hold(served.path, limits.per_process)
    sleep_until(lambda: len(served.server._open) == limits.per_process, what="all accepted")
    with socket.socket(socket.AF_UNIX) as extra:
        extra.connect(served.path)
        refusal = extra.makefile("rb").readline()
    assert b"too many connections from pid" in refusal
    assert b'"ok":false' in refusal
    counts = served.server.counts()  # what `status` shows as control_connections
    assert counts["open"] == limits.per_process
    assert counts["refused_over_limit"] == 1
    held[0].sendall(Request("status", {}).encode())
    assert b'"peer":' in held[0].makefile("rb").readline()
    for sock in held:
        sock.close()
    sleep_until(lambda: not served.server._open, what="all closed")
    assert client.call(served.path, "status")["peer"] == os.getuid()


@NEEDS_SETPRIV
def test_a_reader_flood_does_not_lock_the_owner_out(serve: Callable[..., Served]) -> None:
    """A --control-group reader (uid 1000) opening connections from many processes gets its
    share at most; the owner is still served, and the reader is told why."""
    served = serve(Policy(os.getuid(), reader_gid=OTHER_UID))
    os.chmod(served.path, 0o666)  # noqa: S103 - opened up on purpose: the kernel check must hold alone
    flood = (
        "import socket, sys, time\n"
        "held = []\n"
        "for _ in range(int(sys.argv[2])):\n"
        "    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); held.append(s)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    share = served.server.limits.per_other_uid
    as_other = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
    procs = [
        subprocess.Popen(
            [*as_other, PYTHON, "-c", flood, served.path, str(served.server.limits.per_process)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(served.server.limits.total // served.server.limits.per_process + 1)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"held\n"
        sleep_until(lambda: served.server.over_limit > 0, what="refusals")
        assert served.server._by_uid[OTHER_UID] <= share
        assert client.call(served.path, "status")["peer"] == os.getuid()
        done = _as_other(served.path, "status")
        assert done.returncode == 1
        assert f"too many connections from uid {OTHER_UID}" in done.stderr
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
