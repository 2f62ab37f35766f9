"""Fixtures for the Linux namespace and cgroup tests.

Three tiers (style guide 1.1): unit tests with a fake libc run everywhere; real-system tests
(marked ``linux``) fork real containers where the machine allows and skip with the preflight's
explanation where it does not; privileged ones need root. Every real-system test can take the
``no_leaks`` fixture, which fails the test if a process, mount, cgroup, interface or SysV segment
created during it is still there afterwards. Helper functions live in ``linux_helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from linux_helpers import Snapshot, assert_no_leaks, skip_unless_linux, snapshot


@pytest.fixture(params=["root", "rootless"])
def mode(request: pytest.FixtureRequest) -> str:
    """Each real container test runs in root and in rootless mode, where the machine allows."""
    skip_unless_linux()
    from virtlab.linux import preflight

    wanted: str = request.param
    works, why, _ = preflight.probe(rootless=wanted == "rootless")
    if not works:
        pytest.skip(reason=f"{wanted} mode cannot run here: {why}")
    return wanted


@pytest.fixture
def no_leaks() -> Iterator[Snapshot]:
    """Fail the test if anything it created outlives it."""
    skip_unless_linux()
    before = snapshot()
    yield before
    assert_no_leaks(before)
