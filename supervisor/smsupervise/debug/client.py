"""``smsupervise-debug``: look into a running smsupervise (over its control socket) or into any
job by pid (``--pid N``, the /proc view only). Human output by default, ``--json`` for machines.

A separate process from the supervisor: it may block, sleep for a sampling interval and run
``py-spy``; none of this module is imported by the supervisor.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from smsupervise.debug import attach, render, stacks, tree
from smsupervise.debug.listener import JOB_SOCKET_VARIABLE, candidate_paths
from smsupervise.debug.protocol import (
    ProtocolError,
    Request,
    Response,
    decode_response,
)

SOCKET_VARIABLE = "SMSUPERVISE_CONTROL_SOCKET"
TRUST_VARIABLE = "SMSUPERVISE_DEBUG_TRUST_UID"  # set by --trust-uid (comma-separated uids)
USAGE_EXIT = 2
FAIL_EXIT = 1


class ClientError(Exception):
    """What went wrong, for the user, with the fix; exits 1."""


def find_socket(explicit: str | None, env: Mapping[str, str]) -> str:
    """``--socket``, else ``$SMSUPERVISE_CONTROL_SOCKET``, else ``$SMSUPERVISE_DEBUG_SOCKET`` (set
    in the job's environment), else the first default path that exists."""
    for given in (explicit, env.get(SOCKET_VARIABLE), env.get(JOB_SOCKET_VARIABLE)):
        if given:
            return given
    *shared, own = candidate_paths(env, os.getuid(), 0)
    for path in shared:
        if os.path.exists(path):
            return path
    pattern = os.path.join(os.path.dirname(own), "control-*.sock")  # when the shared names were taken
    others = sorted(glob.glob(pattern))
    if len(others) == 1:
        return others[0]
    if others:
        raise ClientError(f"several smsupervise control sockets: {', '.join(others)}; pass --socket PATH")
    raise ClientError(
        f"no control socket found (looked at {', '.join(shared)}, {pattern}): is smsupervise running "
        "with its control socket on? Pass --socket PATH, or use --pid N to look at any process"
    )


def trusted_uids() -> frozenset[int]:
    """Whose supervisor this client talks to: root's, our own uid's, and ``--trust-uid``'s."""
    extra = os.environ.get(TRUST_VARIABLE, "")
    return frozenset({0, os.getuid(), *(int(word) for word in extra.split(",") if word.strip().isdigit())})


def check_owner(path: str, trusted: frozenset[int]) -> None:
    """The socket and its directory must belong to a trusted uid, and the directory must not be
    writable by others unless sticky (as /tmp is): else anyone could have put it there."""
    for what, where in (("socket", path), ("directory", os.path.dirname(os.path.abspath(path)))):
        try:
            info = os.stat(where)
        except OSError:
            return  # connect says what is wrong
        open_to_all = what == "directory" and info.st_mode & 0o002 and not info.st_mode & stat.S_ISVTX
        if info.st_uid not in trusted or open_to_all:
            raise ClientError(
                f"refusing the control socket {path}: its {what} {where} belongs to uid {info.st_uid}"
                f"{' and is writable by anyone' if open_to_all else ''}, not to you or root, so "
                "another user may have put it there; if you trust that uid, pass --trust-uid "
                f"{info.st_uid}"
            )


def check_server(sock: socket.socket, path: str, trusted: frozenset[int]) -> None:
    """The process that listens must run as a trusted uid (``SO_PEERCRED``), before a byte is sent."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", raw)
    if uid not in trusted:
        raise ClientError(
            f"refusing the control socket {path}: the process answering (pid {pid}) runs as uid "
            f"{uid}, not as you or root, so it is not your supervisor; if you trust that uid, pass "
            f"--trust-uid {uid}"
        )


def exchange(path: str, request: Request) -> Iterator[Response]:
    """Send one request; yield the response lines until the answer or the stream's end. The
    socket, its directory and the server's uid are checked first (``check_owner``,
    ``check_server``): a socket planted by another user gets nothing."""
    trusted = trusted_uids()
    check_owner(path, trusted)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except FileNotFoundError:
        raise ClientError(f"no control socket at {path}: is smsupervise running? (--socket PATH)") from None
    except PermissionError:
        try:
            owner = str(os.stat(path).st_uid)
        except OSError:
            owner = "of the supervisor"
        raise ClientError(
            f"permission denied on {path}: the control socket is owner-only (uid {owner}); "
            f"run smsupervise-debug as uid {owner} or root"
        ) from None
    except ConnectionRefusedError:
        raise ClientError(f"nobody listens on {path}: the supervisor has exited") from None
    try:
        check_server(sock, path, trusted)
    except ClientError:
        sock.close()
        raise
    with sock, sock.makefile("rb") as lines:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request.encode())  # a refusal may come before we are done writing
        for line in lines:
            try:
                response = decode_response(line)
            except ProtocolError as error:
                raise ClientError(str(error)) from None
            if not response.ok:
                raise ClientError(response.error or "refused")
            if response.end:
                return
            yield response
            if response.item is None:
                return


def call(path: str, op: str, **args: Any) -> Any:
    """One request, one result."""
    for response in exchange(path, Request(op, args)):
        return response.result
    raise ClientError(f"the supervisor at {path} closed the connection without answering (it is exiting)")


def _print(data: object, as_json: bool, human: str) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(human + ("\n" if human and not human.endswith("\n") else ""))
    sys.stdout.flush()


def tree_rows(root: int, interval: float) -> list[dict[str, object]]:
    """The tree at ``root`` with CPU% over ``interval`` seconds (two /proc samples)."""
    before = tree.snapshot(root)
    time.sleep(interval)  # the measuring interval, not a synchronisation
    after = tree.snapshot(root)
    return tree.records(after, tree.cpu_percent(before, after, interval))


def cmd_tree(options: argparse.Namespace) -> int:
    root = options.pid or call(find_socket(options.socket, os.environ), "status")["supervisor"]["pid"]
    rows = tree_rows(root, options.interval)
    _print(rows, options.json, render.tree(rows))
    return 0


def cmd_status(options: argparse.Namespace) -> int:
    if options.pid:
        return cmd_attach_status(options)
    result = call(find_socket(options.socket, os.environ), "status")
    _print(result, options.json, render.status(result))
    return 0


def cmd_attach_status(options: argparse.Namespace) -> int:
    """``--pid N status``: a job not started by smsupervise, from /proc only."""
    root = options.pid
    before_readers = [r for pid in tree.subtree(root) for r in attach.readers(pid)]
    rows = tree_rows(root, options.interval)
    after_readers = [r for pid in tree.subtree(root) for r in attach.readers(pid)]
    procs = [p for p in map(tree.read_proc, tree.subtree(root)) if p is not None]
    result = {
        "pid": root,
        "processes": len(rows),
        "zombies": attach.zombies(procs),
        "warnings": [{"pid": r["pid"], "warning": r["warning"]} for r in rows if r["warning"]],
        "inputs": attach.throughput(before_readers, after_readers, options.interval),
        "tree": rows,
    }
    _print(result, options.json, render.attach(result))
    return 0


def cmd_logs(options: argparse.Namespace) -> int:
    path = find_socket(options.socket, os.environ)
    args = {"follow": options.follow, "stream": options.stream, "rank": options.rank, "lines": options.lines}
    for response in exchange(path, Request("logs", args)):
        records = response.result if response.item is None else [response.item]
        for record in records or []:
            _print(record, False, orjson.dumps(record).decode() if options.json else render.log(record))
    return 0


def cmd_act(options: argparse.Namespace) -> int:
    path = find_socket(options.socket, os.environ)
    args: dict[str, Any] = {"signal": options.sig} if options.command == "signal" else {}
    result = call(path, options.command, **args)
    _print(result, options.json, render.acted(options.command, result))
    return 0


def cmd_exec(options: argparse.Namespace) -> int:
    path = find_socket(options.socket, os.environ)
    argv = options.argv[1:] if options.argv[:1] == ["--"] else options.argv
    if options.command == "shell":
        argv = argv or [os.environ.get("SHELL", "/bin/sh")]
    if not argv:
        raise ClientError("exec needs a command: smsupervise-debug exec -- CMD [ARGS...]")
    code = 0
    for response in exchange(path, Request("exec", {"argv": argv})):
        item = response.item or {}
        if "data" in item:
            stream = sys.stdout if item.get("stream") == "stdout" else sys.stderr
            stream.buffer.write(item["data"].encode("utf-8", "surrogateescape"))
            stream.flush()
        if "exit_code" in item:
            code = int(item["exit_code"])
    return code


def cmd_stacks(options: argparse.Namespace) -> int:
    root = options.pid or call(find_socket(options.socket, os.environ), "status")["supervisor"]["pid"]
    job_env: dict[str, str] = {}
    for pid in tree.subtree(root)[1:2] or [root]:
        job_env = tree.environ(pid)
    found = stacks.collect(root, job_env, include_root=bool(options.pid))
    data = [s._asdict() for s in found]
    _print(data, options.json, render.stacks(data))
    return 0 if any(s.method for s in found) else FAIL_EXIT


def cmd_inspect(options: argparse.Namespace) -> int:
    """What ``smsupervise ARGS`` would run here; config errors exactly as train reports them."""
    from smsupervise import cli  # noqa: PLC0415 - the same argv parsing as smsupervise itself
    from smsupervise.debug.inspect import inspect  # noqa: PLC0415
    from smsupervise.errors import SupervisorError  # noqa: PLC0415

    argv = options.argv[1:] if options.argv[:1] == ["--"] else options.argv
    try:
        result = inspect(cli.parse(argv or ["train"], os.environ), os.environ)
    except SupervisorError as error:
        sys.stderr.write(f"smsupervise-debug inspect: {error.message()}\n")
        return error.exit_code
    _print(result, options.json, render.inspected(result))
    return 0


# The flags that are smsupervise-debug's own, whatever the verb: accepted before it or after it.
GLOBAL_FLAGS = {"--socket": True, "--pid": True, "--trust-uid": True, "--json": False, "--interval": True}
COMMAND_LINE_VERBS = {"exec", "shell", "inspect"}  # what follows them is a command line of its own


def _global_flags(target: argparse.ArgumentParser, suppress: bool) -> None:
    """The global flags on ``target``; ``suppress``: on a verb, where a flag not given there must not
    overwrite what was given before the verb."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    target.add_argument(
        "--socket",
        default=default(None),
        help=f"the control socket (default: ${SOCKET_VARIABLE}, then the defaults)",
    )
    target.add_argument(
        "--pid", type=int, default=default(None), help="attach to this process's tree from /proc (no socket)"
    )
    target.add_argument(
        "--trust-uid",
        type=int,
        action="append",
        dest="trust_uid_after_verb" if suppress else "trust_uid",  # added up in parse_command_line
        default=default([]),
        help="also talk to a supervisor running as this uid (default: only yours and root's)",
    )
    target.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")
    target.add_argument(
        "--interval", type=float, default=default(1.0), help="CPU%% and throughput interval (1 s)"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="smsupervise-debug",
        description="Look into a running smsupervise job (control socket), or any process tree (--pid). "
        "Its own flags (--socket, --pid, --trust-uid, --json, --interval) go before or after the verb.",
    )
    _global_flags(top, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_flags(common, suppress=True)
    sub = top.add_subparsers(dest="command", required=True)

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common])

    verb("status", "what runs, the stop state, streams, Pipe channels")
    verb("tree", "the job's process tree: CPU%%, RSS, threads, waits, ranks, TERM warnings")
    logs = verb("logs", "the last records, then (-f) the new ones")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--stream", choices=["stdout", "stderr"])
    logs.add_argument("--rank", type=str)
    logs.add_argument("-n", "--lines", type=int, default=50)
    verb("checkpoint", "run the checkpoint step now, without stopping")
    verb("release", "end a keep-alive after failure now")
    signal_cmd = verb("signal", "send SIG to the job's process group (recorded)")
    signal_cmd.add_argument("sig")
    for name in ("exec", "shell"):
        runner = sub.add_parser(name, help="run CMD with the job's environment and cwd, beside the job")
        runner.add_argument("argv", nargs=argparse.REMAINDER)
    verb("stacks", "Python stacks of every Python process of the job")
    inspect = sub.add_parser("inspect", help="what `smsupervise [OPTIONS] train|serve|CMD` would run here")
    inspect.add_argument("argv", nargs=argparse.REMAINDER)
    return top


def parse_command_line(args: list[str]) -> argparse.Namespace:
    """``args`` (our flags already hoisted) as options; --trust-uid given on both sides adds up."""
    options = parser().parse_args(args)
    options.trust_uid = [*options.trust_uid, *getattr(options, "trust_uid_after_verb", [])]
    return options


def hoist_global_flags(args: list[str]) -> list[str]:
    """``exec``, ``shell`` and ``inspect`` take a command line after them: our own flags written right
    after the verb (``inspect --json train``) are moved before it; the command line starts at the first
    word that is not one of them (``--`` ends them)."""
    verb_at = _skip_global_flags(args, 0)
    if verb_at >= len(args) or args[verb_at] not in COMMAND_LINE_VERBS:
        return args
    end = _skip_global_flags(args, verb_at + 1)
    return [*args[:verb_at], *args[verb_at + 1 : end], args[verb_at], *args[end:]]


def _skip_global_flags(args: list[str], at: int) -> int:
    """The index of the first word from ``at`` on that is neither a global flag nor its value."""
    while at < len(args):
        word = args[at]
        name = word.split("=", 1)[0]
        if name not in GLOBAL_FLAGS:
            return at
        at += 2 if GLOBAL_FLAGS[name] and "=" not in word else 1
    return at


COMMANDS = {
    "status": cmd_status,
    "tree": cmd_tree,
    "logs": cmd_logs,
    "checkpoint": cmd_act,
    "release": cmd_act,
    "signal": cmd_act,
    "exec": cmd_exec,
    "shell": cmd_exec,
    "stacks": cmd_stacks,
    "inspect": cmd_inspect,
}
SOCKET_ONLY = {"logs", "checkpoint", "release", "signal", "exec", "shell"}


def main(argv: Sequence[str] | None = None) -> int:
    args = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    rest: list[str] | None = None
    if "inspect" in args:  # what follows is smsupervise's own command line, options included
        cut = args.index("inspect") + 1
        args, rest = args[:cut], args[cut:]
    options = parse_command_line(args)
    if rest is not None:
        options.argv = rest
    if options.trust_uid:
        given = os.environ.get(TRUST_VARIABLE, "")
        os.environ[TRUST_VARIABLE] = ",".join([given, *map(str, options.trust_uid)]).strip(",")
    if options.pid and options.command in SOCKET_ONLY:
        sys.stderr.write(
            f"smsupervise-debug: '{options.command}' needs a supervisor's control socket; "
            "--pid N offers status, tree and stacks\n"
        )
        return USAGE_EXIT
    try:
        return COMMANDS[options.command](options)
    except ClientError as error:
        sys.stderr.write(f"smsupervise-debug: {error}\n")
        return FAIL_EXIT
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())
