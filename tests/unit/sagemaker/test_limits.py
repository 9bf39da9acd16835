"""The kernel's count of what a program is started with (argv, environment, their pointers)
against ARG_MAX, checked by the kernel itself: whatever ``limits`` lets through, execve takes."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from smsupervise.sagemaker import limits

TRUE = "/bin/true"


def _kernel_takes(argv: list[str], env: dict[str, str], stack: int) -> bool:
    """Whether execve takes ``argv`` and ``env`` under a stack limit of ``stack`` bytes."""
    probe = (
        "import os, resource, sys\n"
        "hard = resource.getrlimit(resource.RLIMIT_STACK)[1]\n"
        f"resource.setrlimit(resource.RLIMIT_STACK, ({stack}, hard))\n"
        "import json\n"
        "argv, env = json.load(sys.stdin)\n"
        "try:\n"
        "    os.execve(argv[0], argv, env)\n"
        "except OSError as error:\n"
        "    sys.exit(7 if error.errno == 7 else 8)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        input=json.dumps([argv, env]).encode(),
        capture_output=True,
        check=False,
    )
    assert done.returncode in (0, 7), done.stderr.decode()
    return done.returncode == 0


@pytest.mark.parametrize("stack", [1 << 20, 2 << 20])
def test_what_the_check_lets_through_the_kernel_takes_and_the_gap_is_small(stack: int) -> None:
    """Around the limit, in 1 KiB steps: every size ``limits`` accepts, execve takes (never a spawn
    that fails with E2BIG), and what it refuses is within a few KiB of what the kernel refuses."""
    limit = limits.arg_max(stack)
    assert limit == stack // 4
    accepted_by_kernel: list[int] = []
    for pad in range(limit - 24 * 1024, limit + 4 * 1024, 1024):
        env = {f"V{index}": "x" * 1000 for index in range(pad // 1008)}
        argv = [TRUE, "y" * 100]
        ours = limits.exec_size(argv, env, TRUE) <= limit
        theirs = _kernel_takes(argv, env, stack)
        assert theirs or not ours, (pad, limits.exec_size(argv, env, TRUE), limit)
        if theirs:
            accepted_by_kernel.append(limits.exec_size(argv, env, TRUE))
        if ours:
            assert theirs
    assert max(accepted_by_kernel) > limit - 16 * 1024  # the check is not far more careful than the kernel


def test_the_limit_follows_the_stack_limit() -> None:
    """A quarter of the stack limit, at least 128 KiB (ARG_MAX), at most 6 MiB (3/4 of 8 MiB)."""
    assert limits.arg_max(1 << 20) == 256 << 10
    assert limits.arg_max(64 << 10) == 128 << 10
    assert limits.arg_max(resource.RLIM_INFINITY) == 6 << 20
    assert limits.arg_max(1 << 40) == 6 << 20
