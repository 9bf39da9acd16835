"""Fixtures for the container scenarios (the session's podman and image: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.podman import ROOT, Podman, problem

PROBLEM = problem()
# The test tree (jobs and helpers) inside the container, read-only.
TESTS = [f"--volume={ROOT / 'tests'}:/tests:ro"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is marked `container`, and skipped with the reason where podman cannot run."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.container)
            # The first test pays for the image (a cold cache: mmdebstrap) on a busy 2-core machine.
            item.add_marker(pytest.mark.timeout(900))
            if PROBLEM is not None:
                item.add_marker(pytest.mark.skip(reason=PROBLEM))


@pytest.fixture
def podman(podman_session: Podman, image: str) -> Iterator[Podman]:
    """The session's podman; containers a test started are removed when it ends."""
    yield podman_session
    podman_session.cleanup()
