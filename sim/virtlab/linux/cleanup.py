"""What this run created on the host, and the check, at the end, that it is really gone.

Every real-Linux command cleans up as it goes: each container's context manager kills its PID 1
and reaps its launcher, each cgroup session removes its groups. But an interruption can land
*between* two statements, for example after ``fork`` returned and before the handle that would
clean up has recorded the PID, or after ``mkdir`` and before ``__enter__`` returned. So the
pieces that create something also *register* it here, before or right after creating it, and
:func:`finish` runs once at the end of an interrupted command:

* **processes**: every direct child of ours still running is killed and reaped; every
  registered process that is not our child (a container's PID 1, which belongs to its launcher)
  is waited for, identified by PID *and* start time so that a reused PID is never mistaken for
  ours, and killed if it outlives its launcher;
* **cgroups**: every registered group that still exists is emptied and removed;
* **network interfaces**: every registered host-side interface (the veth peer) is waited for; it
  goes away by itself when its network namespace dies, asynchronously.

Namespaces, mounts inside them and SysV objects need no entry: the kernel frees them with the
last process inside, which the process check covers.

:func:`finish` returns what it found and removed and what is still there, from fresh checks of
``/proc``, the cgroup tree and the interface list, so the closing message states facts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Outcome", "finish", "forget_process", "register_group", "register_link",
           "register_process"]

_processes: dict[int, tuple[str, int]] = {}  # pid -> (name, start time in clock ticks)
_groups: list[Path] = []
_links: list[str] = []


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or ``None`` if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):  # state: exited, only the entry is left
        return None
    return int(fields[19])  # field 22 of stat; the first two are consumed by the split


def register_process(pid: int, name: str) -> None:
    """Remember a process this run started (call in the parent right after ``fork``)."""
    if os.getpid() != _owner:
        return  # a forked child: its registrations would die with it anyway
    started = _start_ticks(pid)
    if started is not None:  # None: it has already exited
        _processes[pid] = (name, started)


def forget_process(pid: int) -> None:
    """The process was reaped by its owner; nothing to check any more."""
    _processes.pop(pid, None)


def register_group(path: Path) -> None:
    """Remember a cgroup (call *before* ``mkdir``, so no interruption can hide it)."""
    if os.getpid() == _owner and path not in _groups:
        _groups.append(path)


def register_link(name: str) -> None:
    """Remember a host-side network interface that must disappear."""
    if os.getpid() == _owner and name not in _links:
        _links.append(name)


_owner = os.getpid()


def reset() -> None:
    """Start a new record (each command calls this first; forked children never do)."""
    global _owner  # noqa: PLW0603 - one record per process, by design
    _owner = os.getpid()
    _processes.clear()
    _groups.clear()
    _links.clear()


@dataclass
class Outcome:
    """What :func:`finish` found: ``removed`` by it at the end, and ``left`` despite it."""

    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def _our_children() -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _still_ours(pid: int, started: int) -> bool:
    return _start_ticks(pid) == started  # a reused PID has another start time


def finish(timeout_s: float = 10.0) -> Outcome:
    """Remove whatever this run created that is still there; report it, and what remains.

    Call with further signals blocked or ignored (:func:`virtlab.linux.procs
    .signals_as_interrupts` does that after the first one): the checks must run to the end.
    """
    from virtlab.linux import cgroups  # late: cgroups imports procs, which imports us

    outcome = Outcome()
    my_comm = _comm(os.getpid())
    for pid in _our_children():
        comm = _comm(pid)
        # Ours: registered, named virtlab-*, or forked a moment ago and not renamed yet (it still
        # has our own name). Anything else (an unrelated subprocess of a caller) is left alone.
        if pid not in _processes and not comm.startswith("virtlab-") and comm != my_comm:
            continue
        name = _processes.get(pid, (comm, 0))[0]
        exited = _start_ticks(pid) is None  # a zombie: it ended by itself, only reap it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:  # a launcher leads its own group: take it all
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        _processes.pop(pid, None)
        if not exited:
            outcome.removed.append(f"process {pid} ({name}), killed")
    deadline = time.monotonic() + timeout_s
    for pid, (name, started) in list(_processes.items()):
        killed = False
        while _still_ours(pid, started):
            if time.monotonic() > deadline:
                if killed:
                    outcome.left.append(f"process {pid} ({name})")
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)  # from an ancestor namespace: always delivered
                killed, deadline = True, time.monotonic() + timeout_s
                outcome.removed.append(f"process {pid} ({name}), killed")
            time.sleep(0.01)
        _processes.pop(pid, None)
    for path in list(_groups):
        if path.exists():
            problems = cgroups.remove_tree(path, timeout_s=timeout_s)
            if problems:
                outcome.left += [f"cgroup {problem}" for problem in problems]
            else:
                outcome.removed.append(f"cgroup {path}")
        _groups.remove(path)
    for name in list(_links):
        while True:
            try:
                socket.if_nametoindex(name)
            except OSError:
                break
            if time.monotonic() > deadline:
                outcome.left.append(f"network interface {name}")
                break
            time.sleep(0.01)
        _links.remove(name)
    return outcome
