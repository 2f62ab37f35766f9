"""Helpers for the Linux namespace and cgroup tests: skips that say why, the CLI, leak checks.

Imported by the test modules as ``linux_helpers`` (pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import errno
import os
import select
import signal
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


# Other work on the machine (another checkout's tests, say) may start and stop virtlab processes
# and groups of its own while a test runs. The leak checks therefore look only at what *this*
# test run started: processes in its session or in the sessions of the CLI subprocesses it
# started, and groups named after its own PID or theirs.
_STARTED: set[int] = set()


def started(pid: int) -> None:
    """Count a subprocess started with ``start_new_session=True`` (its PID is its session)."""
    _STARTED.add(pid)


def start_cli(*args: str, **popen: object) -> subprocess.Popen[str]:
    """Start ``python -u -m virtlab ARGS`` in its own session (a test can signal all of it)."""
    proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-u", "-m", "virtlab", *args], env=virtlab_env(),
        start_new_session=True, **popen)
    started(proc.pid)
    return proc


def run_cli(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m virtlab ARGS`` in a subprocess (the real CLI), killed after ``timeout``."""
    proc = start_cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def read_until(proc: subprocess.Popen[bytes], text: str, timeout_s: float) -> str:
    """Read a child's raw output (run with ``-u``) until ``text`` appears; fail if it never does.

    Returns everything read so far. Output after ``text`` in the same chunk is included.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and text.encode() not in seen:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    if text.encode() not in seen:
        pytest.fail(f"never saw {text!r}; output so far:\n{seen.decode(errors='replace')}")
    return seen.decode(errors="replace")


def session_processes(session: int) -> list[tuple[int, str]]:
    """Live (not zombie) ``virtlab-*`` processes in ``session``."""
    from virtlab.linux import procs

    return [(pid, name) for pid, name in procs.virtlab_processes() if _session(pid) == session]


def _session(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[3])  # zombies have exited already


def _ours(pid: int) -> bool:
    session = _session(pid)
    return session is not None and (session == os.getsid(0) or session in _STARTED)


def _our_group(name: str) -> bool:
    owner = name.split("-")[1] if name.count("-") >= 2 else ""
    if not owner.isdigit():
        return True  # not one of the usual names: count it, to be safe
    return int(owner) == os.getpid() or int(owner) in _STARTED or _ours(int(owner))


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
        groups = frozenset(name for name in cgroups.leftover_groups(cgroups.detect())
                           if _our_group(name))
    except (PreflightError, OSError):
        groups = frozenset()
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        mountinfo = handle.read()
    with open("/proc/sysvipc/shm", encoding="ascii") as handle:
        shm = frozenset(int(line.split()[0]) for line in handle.readlines()[1:] if line.strip())
    links = frozenset(name for _, name in socket.if_nameindex())
    processes = frozenset((pid, name) for pid, name in procs.virtlab_processes() if _ours(pid))
    return Snapshot(processes, mountinfo, groups, links, shm)


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
