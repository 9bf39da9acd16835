"""The kernel's pipe limits as read from a /proc tree, and our own pipes counted."""

from __future__ import annotations

import os
from pathlib import Path

from smsupervise.linux.pipes import PIPE_SIZE, raise_pipe_size, read_limits


def _proc(root: Path, soft: str, max_size: str, cap_eff: str) -> Path:
    (root / "sys" / "fs").mkdir(parents=True)
    (root / "sys" / "fs" / "pipe-user-pages-soft").write_text(soft)
    (root / "sys" / "fs" / "pipe-max-size").write_text(max_size)
    (root / "self").mkdir()
    (root / "self" / "status").write_text(f"Name:\tx\nCapEff:\t{cap_eff}\n")
    return root


def test_limits_come_from_sys_fs_and_the_capabilities(tmp_path: Path) -> None:
    """The soft limit in bytes, pipe-max-size, and no exemption without SYS_ADMIN or SYS_RESOURCE."""
    limits = read_limits(str(_proc(tmp_path, "4096\n", "524288\n", "0000000000000000")))
    assert limits.user_soft == 4096 * os.sysconf("SC_PAGE_SIZE")
    assert limits.max_size == 524288
    assert not limits.exempt


def test_cap_sys_resource_or_sys_admin_lifts_the_limit(tmp_path: Path) -> None:
    """Either capability in CapEff exempts us (fs/pipe.c), and then nothing needs counting."""
    assert read_limits(str(_proc(tmp_path / "a", "16384", "1048576", f"{1 << 24:016x}"))).exempt
    assert read_limits(str(_proc(tmp_path / "b", "16384", "1048576", f"{1 << 21:016x}"))).exempt
    assert read_limits(str(_proc(tmp_path / "c", "16384", "1048576", f"{1 << 20:016x}"))).in_use == 0


def test_our_own_pipes_are_counted_at_their_size(tmp_path: Path) -> None:
    """A 1 MiB pipe of ours adds 1 MiB to what our uid is seen to use."""
    proc = _proc(tmp_path, "16384", "1048576", "0")
    me = proc / str(os.getpid())
    (me / "fd").mkdir(parents=True)
    read_fd, write_fd = os.pipe()
    try:
        assert raise_pipe_size(write_fd) == PIPE_SIZE
        (me / "fd" / str(write_fd)).symlink_to(os.readlink(f"/proc/self/fd/{write_fd}"))
        assert read_limits(str(proc)).in_use == PIPE_SIZE
    finally:
        os.close(read_fd)
        os.close(write_fd)
