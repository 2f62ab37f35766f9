"""Helpers for the Linux namespace and cgroup tests: skips that say why, the CLI, leak checks.

Imported by the test modules as ``linux_helpers`` (pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[2] / "sim"
IS_LINUX = sys.platform.startswith("linux")
# errnos that mean "this machine does not allow it", as in CPython's NamespacesTests
SKIP_ERRNOS = {errno.EPERM, errno.ENOSYS, errno.EINVAL, errno.ENOSPC, errno.EACCES}


def skip_unless_linux() -> None:
    if not IS_LINUX:
        pytest.skip(reason=f"needs Linux namespaces; this is {sys.platform}")


def skip_unless_root() -> None:
    skip_unless_linux()
    if os.geteuid() != 0:
        pytest.skip(reason=f"needs root (euid is {os.geteuid()})")


def skip_on_namespace_error(exc: OSError, what: str) -> None:
    """Skip (visibly, with the kernel's reason) if ``exc`` means 'not allowed here'; else raise."""
    if exc.errno in SKIP_ERRNOS:
        pytest.skip(reason=f"{what}: {exc} (errno {errno.errorcode.get(exc.errno or 0)})")
    raise exc


def virtlab_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SIM) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_cli(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m virtlab ARGS`` in a subprocess (the real CLI)."""
    return subprocess.run([sys.executable, "-m", "virtlab", *args], capture_output=True,
                          text=True, env=virtlab_env(), timeout=timeout, check=False)


@dataclass(frozen=True)
class Snapshot:
    """What the host looks like, for leak checks."""

    processes: frozenset[tuple[int, str]]
    mountinfo: str
    groups: frozenset[str]
    links: frozenset[str]
    shm_keys: frozenset[int]


def snapshot() -> Snapshot:
    from virtlab.errors import PreflightError
    from virtlab.linux import cgroups, procs

    try:
        groups = frozenset(cgroups.leftover_groups(cgroups.detect()))
    except (PreflightError, OSError):
        groups = frozenset()
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        mountinfo = handle.read()
    with open("/proc/sysvipc/shm", encoding="ascii") as handle:
        shm = frozenset(int(line.split()[0]) for line in handle.readlines()[1:] if line.strip())
    links = frozenset(name for _, name in socket.if_nameindex())
    return Snapshot(frozenset(procs.virtlab_processes()), mountinfo, groups, links, shm)


def assert_no_leaks(before: Snapshot, timeout_s: float = 10.0) -> None:
    """Wait up to ``timeout_s`` for the host to look as it did; fail with the difference.

    Generous on purpose: cgroup removal and network-namespace teardown finish
    asynchronously in the kernel, later on a loaded machine.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        after = snapshot()
        problems = []
        if not after.processes <= before.processes:
            problems.append(f"processes left: {sorted(after.processes - before.processes)}")
        if after.mountinfo != before.mountinfo:
            problems.append("the host's mount table changed")
        if not after.groups <= before.groups:
            problems.append(f"cgroups left: {sorted(after.groups - before.groups)}")
        if not after.links <= before.links:
            problems.append(f"interfaces left: {sorted(after.links - before.links)}")
        if not after.shm_keys <= before.shm_keys:
            problems.append(f"SysV segments left: {sorted(after.shm_keys - before.shm_keys)}")
        if not problems:
            return
        if time.monotonic() > deadline:
            pytest.fail("leaked: " + "; ".join(problems))
        time.sleep(0.05)  # some teardown (network namespaces) is asynchronous in the kernel


def namespaces_in_use() -> set[str]:
    """Every namespace link held by a process or an open file descriptor on this machine."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for sub in ("ns", "fd"):
            try:
                names = os.listdir(f"/proc/{entry}/{sub}")
            except OSError:
                continue
            for name in names:
                try:
                    target = os.readlink(f"/proc/{entry}/{sub}/{name}")
                except OSError:
                    continue
                if ":[" in target and not target.startswith(("socket:", "pipe:", "anon_inode:")):
                    found.add(target)
    return found


def assert_namespaces_gone(links: Iterable[str], timeout_s: float = 10.0) -> None:
    """Fail if any of these namespaces is still held by anything."""
    wanted = set(links)
    deadline = time.monotonic() + timeout_s
    while True:
        alive = wanted & namespaces_in_use()
        if not alive:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"namespaces still alive: {sorted(alive)}")
        time.sleep(0.05)
