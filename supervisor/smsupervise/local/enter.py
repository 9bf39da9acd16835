"""The first program inside a host's namespaces: ``python -m smsupervise.local.enter SPEC.json``.

It runs as PID 1 of the host's new PID namespace, in a private mount namespace (``unshare`` makes
mounts private), sets the host name (UTS namespace), bind-mounts what the spec lists (the host's
tree on ``/opt/ml``, each FastFile channel read-only, each File channel as a writable overlay over
its data, the job's hosts file on ``/etc/hosts``),
then ``exec``s the job, which thereby becomes PID 1 itself. In ``basedir`` mode the spec has no
mounts and no host name, and this only execs.

The spec (JSON): ``{"hostname": str|null, "binds": [[source, target, read_only, overlay_state|null], ...],
"argv": [...], "env": {...}, "cwd": str}``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import orjson


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"mount {' '.join(args)} failed: {result.stderr.strip()}")


def bind(source: str, target: str, read_only: bool) -> None:
    """Bind-mount ``source`` on ``target`` (created empty if missing), read-only if asked."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb"):
            pass
    _mount("--bind", source, target)
    if read_only:  # a bind mount takes MS_RDONLY only on a remount (mount(8), "bind mount operation")
        _mount("-o", "remount,bind,ro", target)


def overlay(source: str, state: str, target: str) -> None:
    """Mount an overlay on ``target``: ``source`` below, ``state``'s ``upper`` and ``work`` above.
    The layers are handed over as ``/proc/self/fd/N`` (directories opened here and inherited by
    mount(8)): no escaping of the paths' commas and colons, and nothing on disk pointing back."""
    os.makedirs(target, exist_ok=True)
    fds = [
        os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in (source, f"{state}/upper", f"{state}/work")
    ]
    try:
        lower, upper, work = (f"/proc/self/fd/{fd}" for fd in fds)
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        result = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, target],
            capture_output=True,
            text=True,
            check=False,
            pass_fds=fds,
        )
        if result.returncode != 0:
            raise OSError(f"mount -t overlay failed: {result.stderr.strip()}")
    finally:
        for fd in fds:
            os.close(fd)


def writable(source: str, target: str, state: str) -> None:
    """A File channel: an overlay over the staged data; where the kernel refuses one (an older
    kernel in a user namespace, layers that overlap), the data read-only, said on stderr."""
    try:
        overlay(source, state, target)
    except OSError as error:
        sys.stderr.write(
            f"smsupervise-local: {target}: no overlay ({error}); the channel is read-only instead\n"
        )
        bind(source, target, True)


def enter(spec: dict[str, Any]) -> None:
    """Set up the host as the spec says and exec its job (never returns)."""
    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])
    for source, target, read_only, *state in spec.get("binds", []):
        if state and state[0]:
            writable(source, target, state[0])
        else:
            bind(source, target, read_only)
    os.chdir(spec.get("cwd") or "/")
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])  # noqa: S606 (the job, as its argv says)


def main() -> None:
    """Read the spec named on the command line and enter."""
    try:
        with open(sys.argv[1], "rb") as handle:
            enter(orjson.loads(handle.read()))
    except (OSError, IndexError, KeyError) as error:
        sys.stderr.write(f"smsupervise-local: could not start the host: {error}\n")
        sys.exit(125)


if __name__ == "__main__":
    main()
