"""CPU cgroups, v1 or v2: find the controller, make uniquely named groups, always remove them.

A cgroup is a directory in a special filesystem. Making a directory makes a group, writing a PID
to its ``cgroup.procs`` moves that process in, and writing the control files sets the limits:

=================  ===============================  =========================================
knob               cgroup v2                         cgroup v1
=================  ===============================  =========================================
relative share     ``cpu.weight`` 1..10000 (100)    ``cpu.shares`` 2..262144 (1024)
hard cap           ``cpu.max`` = ``"QUOTA PERIOD"``  ``cpu.cfs_quota_us``, ``cpu.cfs_period_us``
throttling seen    ``cpu.stat``: ``nr_periods``,    ``cpu.stat``: ``nr_periods``,
                   ``nr_throttled``,                 ``nr_throttled``, ``throttled_time`` (ns)
                   ``throttled_usec``
=================  ===============================  =========================================

Machines come in three layouts: pure v2 (``/sys/fs/cgroup`` is ``cgroup2``, current distros),
pure v1, and *hybrid*: v1 controllers plus a ``cgroup2`` under ``/sys/fs/cgroup/unified`` that
has no controllers of its own. The mount table, not a guessed path, says which: :func:`detect`
reads ``/proc/self/mountinfo`` and takes the hierarchy that actually has the ``cpu`` controller.

Safety rules, all enforced here: group names are unique (``virtlab-<pid>-<random>``); only
processes we forked are ever moved in; nothing pre-existing is written to (on v2 the ``cpu``
controller must already be enabled in the root's ``cgroup.subtree_control``); and every group is
removed on the way out. A group left by a run that was killed with ``SIGKILL`` (its owner PID is
gone) is removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from virtlab.errors import PreflightError
from virtlab.linux import cleanup, procs

__all__ = ["CgroupLayout", "CgroupSession", "CpuGroup", "detect", "leftover_groups",
           "remove_stale", "remove_tree", "stale_groups"]

GROUP_PREFIX = "virtlab-"
_GROUP_NAME = re.compile(r"^virtlab-(\d+)-[0-9a-f]+$")


@dataclass(frozen=True)
class CgroupLayout:
    """Where the ``cpu`` controller lives.

    Attributes
    ----------
    version:
        1 or 2.
    mountpoint:
        The hierarchy's mount point; our groups are made directly below it.

    """

    version: int
    mountpoint: Path

    def describe(self) -> str:
        """One line for the demo and ``doctor``."""
        if self.version == 2:
            return f"cgroup v2 at {self.mountpoint} (cpu.weight, cpu.max)"
        return (f"cgroup v1 cpu controller at {self.mountpoint} "
                "(cpu.shares, cpu.cfs_quota_us/cpu.cfs_period_us)")


def _mounts(mountinfo: str) -> list[tuple[str, str, list[str]]]:
    """(mount point, fstype, super options) for every cgroup mount in a mountinfo text."""
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mountpoint = fields[4].replace("\\040", " ")
        found.append((mountpoint, tail[0], tail[2].split(",")))
    return found


def detect(mountinfo: str | None = None) -> CgroupLayout:
    """Find the hierarchy with the ``cpu`` controller, or say why there is none.

    Parameters
    ----------
    mountinfo:
        Text of ``/proc/self/mountinfo`` (read if not given; tests pass their own).

    Raises
    ------
    PreflightError
        No usable ``cpu`` controller; the message says what was found and what to do.

    """
    if mountinfo is None:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            mountinfo = handle.read()
    mounts = _mounts(mountinfo)
    notes = []
    for mountpoint, fstype, _ in mounts:
        if fstype != "cgroup2":
            continue
        root = Path(mountpoint)
        controllers = _read_words(root / "cgroup.controllers")
        if "cpu" not in controllers:
            notes.append(f"the cgroup2 at {root} has no cpu controller "
                         f"(it has: {' '.join(sorted(controllers)) or 'none'})")
            continue
        if "cpu" not in _read_words(root / "cgroup.subtree_control"):
            raise PreflightError(
                f"cgroup v2 at {root} has the cpu controller, but it is not enabled for child "
                f"groups. virtlab does not change the root's settings; enable it yourself with "
                f"`echo +cpu > {root}/cgroup.subtree_control` (as root) and run again.")
        return CgroupLayout(2, root)
    for mountpoint, fstype, options in mounts:
        if fstype == "cgroup" and "cpu" in options:
            return CgroupLayout(1, Path(mountpoint))
    detail = "; ".join(notes) or "no cgroup filesystem with the cpu controller is mounted"
    raise PreflightError(f"no CPU cgroup controller: {detail}. The cgroups demo needs one "
                         "(any systemd distribution has it); the simulator works without.")


def _read_words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


@dataclass(frozen=True)
class CpuGroup:
    """One leaf group we created."""

    path: Path
    version: int

    @property
    def procs_file(self) -> str:
        """The file a launcher writes its own PID to."""
        return str(self.path / "cgroup.procs")

    def set_weight(self, weight: int) -> str:
        """Set the relative CPU share in v2 units (100 = default); return what was written.

        On v1 the weight is converted to shares as ``weight * 1024 / 100``, so 300:100 becomes
        3072:1024 and the ratio is the same.
        """
        if self.version == 2:
            return self._write("cpu.weight", str(weight))
        return self._write("cpu.shares", str(round(weight * 1024 / 100)))

    def set_quota(self, quota_us: int, period_us: int) -> str:
        """Cap the group at ``quota_us`` of CPU time per ``period_us``; return what was written."""
        if self.version == 2:
            return self._write("cpu.max", f"{quota_us} {period_us}")
        return "; ".join((self._write("cpu.cfs_period_us", str(period_us)),
                          self._write("cpu.cfs_quota_us", str(quota_us))))

    def throttling(self) -> dict[str, int]:
        """``nr_periods``, ``nr_throttled`` and the throttled time in µs, from ``cpu.stat``."""
        stats = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            stats[key] = int(value)
        throttled_us = stats.get("throttled_usec", stats.get("throttled_time", 0) // 1000)
        return {"nr_periods": stats.get("nr_periods", 0),
                "nr_throttled": stats.get("nr_throttled", 0), "throttled_us": throttled_us}

    def pids(self) -> list[int]:
        """List the processes in the group."""
        return [int(word) for word in (self.path / "cgroup.procs").read_text().split()]

    def _write(self, name: str, value: str) -> str:
        (self.path / name).write_text(value)
        return f"{name} = {value}"


class CgroupSession:
    """A parent group ``virtlab-<pid>-<random>`` holding our leaf groups, removed on exit.

    Parameters
    ----------
    layout:
        From :func:`detect`.

    """

    def __init__(self, layout: CgroupLayout) -> None:
        self.layout = layout
        self.parent = layout.mountpoint / f"{GROUP_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.groups: list[CpuGroup] = []
        self.leftovers: list[str] = []
        self.removed_stale: list[str] = []

    def __enter__(self) -> CgroupSession:
        self.removed_stale = remove_stale(self.layout)
        cleanup.register_group(self.parent)  # before mkdir: no interruption can hide it
        self.parent.mkdir()
        try:
            if self.layout.version == 2:
                # No-internal-process rule: a v2 group that hands "cpu" to its children may not
                # hold processes itself, so the parent only groups and the containers go in the
                # leaves.
                (self.parent / "cgroup.subtree_control").write_text("+cpu")
        except BaseException:
            remove_tree(self.parent)  # __exit__ will not run when __enter__ fails
            raise
        return self

    @property
    def parent_group(self) -> CpuGroup:
        """The session's parent group itself (to weight it against the rest of the machine)."""
        return CpuGroup(self.parent, self.layout.version)

    def group(self, name: str) -> CpuGroup:
        """Create a leaf group below the session's parent."""
        path = self.parent / name
        path.mkdir()
        group = CpuGroup(path, self.layout.version)
        self.groups.append(group)
        return group

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.leftovers = remove_tree(self.parent)


def remove_tree(parent: Path, timeout_s: float = 10.0) -> list[str]:
    """Empty and remove ``parent`` and its leaf groups; return what could not be removed.

    A group can be removed only once it holds no process. Processes of ours (``virtlab-*``) still
    inside are killed; anything else is left alone and reported. ``rmdir`` can still see ``EBUSY``
    for a moment after the last process exited (longer on a loaded machine), hence the retries
    for up to ``timeout_s``.
    """
    if not parent.exists():
        return []
    leftovers = []
    leaves = [path for path in parent.iterdir() if path.is_dir()]
    for group_dir in [*leaves, parent]:
        deadline = time.monotonic() + timeout_s
        while True:
            _kill_ours(group_dir)
            try:
                group_dir.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    leftovers.append(f"{group_dir}: {exc.strerror}")
                    break
                time.sleep(0.01)
    return leftovers


def _kill_ours(group_dir: Path) -> None:
    try:
        pids = [int(word) for word in (group_dir / "cgroup.procs").read_text().split()]
    except OSError:
        return
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm", encoding="ascii") as comm:
                ours = comm.read().startswith(procs.NAME_PREFIX)
        except OSError:
            continue
        if ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _owner_alive(pid: int, group: Path) -> bool:
    """Tell whether the run that made ``group`` is still running as ``pid``.

    A PID is reused once the PID space wraps around, so "a process with that PID exists" is not
    enough: the owner made the group after it started, so a process that started after the
    group was made (its directory's mtime, which adding leaves does not change) is someone else.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user: fall through to the start-time check
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as handle:
            boot_s = next(int(line.split()[1]) for line in handle if line.startswith("btime"))
        started_s = boot_s + ticks / os.sysconf("SC_CLK_TCK")
        made_s = group.stat().st_mtime
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # cannot tell: leave it alone
    return started_s <= made_s + 2.0  # btime has whole seconds: allow for the rounding


def stale_groups(layout: CgroupLayout) -> list[Path]:
    """Groups ``virtlab-<pid>-<random>`` whose owner run no longer exists (it was killed)."""
    found = []
    for path in sorted(layout.mountpoint.iterdir()):
        match = _GROUP_NAME.match(path.name)
        if match and path.is_dir() and not _owner_alive(int(match.group(1)), path):
            found.append(path)
    return found


def remove_stale(layout: CgroupLayout) -> list[str]:
    """Remove groups left by earlier runs whose owner process no longer exists; return them."""
    removed = []
    for path in stale_groups(layout):
        if not remove_tree(path):
            removed.append(path.name)
    return removed


def leftover_groups(layout: CgroupLayout) -> list[str]:
    """Names of every ``virtlab-*`` group below the hierarchy root (for leak checks)."""
    return sorted(path.name for path in layout.mountpoint.iterdir()
                  if path.name.startswith(GROUP_PREFIX))
