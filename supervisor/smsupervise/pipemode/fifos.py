"""The relay's FIFOs in its directory: it refuses a directory it could damage, removes only what it
created, and turns a failed channel's FIFO into an immediate EOF, so no FIFO is left without a writer.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading

from smsupervise.errors import UsageError


def epoch_of(name: str, channel: str) -> int | None:
    """N for a name ``<channel>_<N>``, else None."""
    prefix = f"{channel}_"
    rest = name[len(prefix) :]
    return int(rest) if name.startswith(prefix) and rest.isdigit() else None


def check_relay_dir(relay_dir: str, upstream_dir: str, channels: tuple[str, ...]) -> None:
    """Refuse a relay dir that is the platform's data dir, or that already holds ``<channel>_<N>``
    entries: a FIFO there may be the platform's (or a crashed run's: we cannot tell), and anything
    else is not ours to replace. Raises ``UsageError`` (exit 2) naming the entry and the fix."""
    option = f"--pipe-relay-dir {relay_dir}"
    if not os.path.isdir(relay_dir):
        return
    with contextlib.suppress(OSError):
        if os.path.samefile(relay_dir, upstream_dir):
            raise UsageError(
                f"{option}: this is the platform's Pipe-mode data dir ({upstream_dir}), where its own "
                "FIFOs <channel>_<N> appear; choose a directory of its own (or leave the option unset)"
            )
    for name in sorted(os.listdir(relay_dir)):
        if any(epoch_of(name, channel) is not None for channel in channels):
            kind = "a FIFO" if _is_fifo(os.path.join(relay_dir, name)) else "a file that is not ours"
            raise UsageError(
                f"{option}: it already holds {name}, {kind}; smsupervise removes only the FIFOs it "
                "creates, so it will not use this directory: remove the entry or choose another directory"
            )


class RelayFifos:
    """The FIFOs (and EOF files) one channel's relay created, by identity, so that only they go."""

    def __init__(self, relay_dir: str) -> None:
        self.relay_dir = relay_dir
        self._ours: dict[str, tuple[int, int, int]] = {}  # dev, inode, type
        self._lock = threading.Lock()  # the relay thread creates, PipeRelay.stop removes

    def make(self, path: str) -> None:
        """Create the FIFO ``path`` (unless we already made it)."""
        with self._lock:
            if path in self._ours and self._is_ours(path):
                return
            os.mkfifo(path, 0o660)
            self._remember(path)

    def remove(self, path: str) -> None:
        """Remove ``path`` if it is still the entry we created."""
        with self._lock:
            if self._is_ours(path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            self._ours.pop(path, None)

    def remove_all(self) -> None:
        for path in list(self._ours):
            self.remove(path)

    def give_eof(self, path: str) -> None:
        """Make ``path`` an immediate EOF for whoever opens it, now or later: hold it open as a
        writer (so an ``open()`` waiting on it returns), put an empty file in its place (later
        opens), then let go (readers of the FIFO see no writer: EOF)."""
        with self._lock:
            if not self._is_ours(path):
                return
            holder = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                spare = f"{path}.eof"
                os.close(os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o444))
                os.replace(spare, path)
                self._remember(path)
            finally:
                os.close(holder)

    def _remember(self, path: str) -> None:
        self._ours[path] = _identity(os.lstat(path))

    def _is_ours(self, path: str) -> bool:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        return self._ours.get(path) == _identity(info)


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    """What tells our entry from one put in its place (an inode number may be reused)."""
    return info.st_dev, info.st_ino, stat.S_IFMT(info.st_mode)


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
