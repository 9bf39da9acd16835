"""A directory tree removed without recursion and without following a symlink, at any depth.

``shutil.rmtree`` recurses once per level (RecursionError past about 1000 levels, which a tar
member of 1500 directories reaches) and keeps one fd open per level (EMFILE past the fd limit).
Here one loop walks down with ``openat(O_NOFOLLOW)`` and back up through ``..``, holding one
directory fd and the names still to visit: a symlink is removed as a link, never entered; a
directory that is not one any more when opened (swapped for a link) is unlinked as an entry.
"""

from __future__ import annotations

import contextlib
import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _entries(fd: int) -> list[str]:
    """The directory's entries, non-directories unlinked on the way; returns its subdirectories."""
    subdirs = []
    for name in os.listdir(fd):
        try:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            subdirs.append(name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
    return subdirs


def _empty(held: list[int]) -> None:
    """Empty the directory whose fd is ``held[0]``; ``held[0]`` is the fd held at each moment
    (the caller closes it), and that of the same directory again at the end."""
    pending: list[list[str]] = [_entries(held[0])]  # names still to visit, per level entered
    names: list[str] = []  # the name of each level entered below the top
    while pending:
        if pending[-1]:
            name = pending[-1].pop()
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=held[0])
            except FileNotFoundError:
                continue
            except OSError:  # swapped for a link or a file since it was listed: an entry
                os.unlink(name, dir_fd=held[0])
                continue
            os.close(held[0])
            held[0] = child
            names.append(name)
            pending.append(_entries(child))
            continue
        pending.pop()
        if names:
            up = os.open("..", _DIR_FLAGS, dir_fd=held[0])
            os.close(held[0])
            held[0] = up
            os.rmdir(names.pop(), dir_fd=up)


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything below it (a symlink or a file at ``path``: just that entry).
    Raises ``OSError`` if something cannot be removed; a missing ``path`` is not an error."""
    parent_path, top = os.path.split(os.path.abspath(path))
    parent = os.open(parent_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            held = [os.open(top, _DIR_FLAGS, dir_fd=parent)]
        except FileNotFoundError:
            return
        except OSError:  # ENOTDIR or ELOOP: not a directory (a file, a symlink)
            os.unlink(top, dir_fd=parent)
            return
        try:
            _empty(held)
        finally:
            os.close(held[0])
        os.rmdir(top, dir_fd=parent)
    finally:
        os.close(parent)
