"""Namespaces: what each kind isolates, how to see them, how to create and join them.

A namespace is a kernel object that gives a group of processes their own copy of one global
resource (the hostname, the PID numbers, the mount table, ...). Every process points at one
namespace of each kind; the links under ``/proc/PID/ns/`` show which, as ``kind:[inode]``. Two
processes share a namespace exactly when the inode numbers agree, which is how the demo and the
tests prove isolation.

Python 3.12 added :func:`os.unshare` and :func:`os.setns`. Where they exist we use them and show
the ctypes call beside them; on 3.11 the ctypes wrappers in :mod:`virtlab.linux.libc` do the same
job. Both raise the same :class:`OSError` subclasses.

None of these functions must run in the lab's own process: ``unshare`` and ``setns`` change the
*calling thread*, and a notebook or pytest process must stay where it is. The process layout in
:mod:`virtlab.linux.container` calls them from forked, single-threaded children.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from virtlab.linux import libc as _c

__all__ = [
    "KINDS",
    "NamespaceKind",
    "entered",
    "flags_for",
    "identities",
    "os_api_available",
    "setns",
    "unshare",
    "write_file",
    "write_id_maps",
]


@dataclass(frozen=True)
class NamespaceKind:
    """One kind of namespace.

    Attributes
    ----------
    name:
        The link name under ``/proc/PID/ns`` (``"uts"``, ``"mnt"``, ...).
    flag:
        The ``CLONE_NEW*`` bit that creates one.
    isolates:
        What a process in a new namespace of this kind gets its own copy of.

    """

    name: str
    flag: int
    isolates: str


KINDS: tuple[NamespaceKind, ...] = (
    NamespaceKind("uts", _c.CLONE_NEWUTS, "hostname and NIS domain name"),
    NamespaceKind("pid", _c.CLONE_NEWPID, "process IDs (the first child becomes PID 1)"),
    NamespaceKind("mnt", _c.CLONE_NEWNS, "the mount table"),
    NamespaceKind("net", _c.CLONE_NEWNET, "network devices, addresses, routes, ports"),
    NamespaceKind("ipc", _c.CLONE_NEWIPC, "SysV IPC objects and POSIX message queues"),
    NamespaceKind("user", _c.CLONE_NEWUSER, "user and group IDs, and capabilities"),
    NamespaceKind("cgroup", _c.CLONE_NEWCGROUP, "the visible root of the cgroup tree"),
    NamespaceKind("time", _c.CLONE_NEWTIME, "the boot-time and monotonic clock offsets"),
)
_BY_NAME = {kind.name: kind for kind in KINDS}


def flags_for(names: Iterable[str]) -> int:
    """OR together the ``CLONE_NEW*`` flags of the named kinds (``["uts", "net"]`` → mask)."""
    mask = 0
    for name in names:
        mask |= _BY_NAME[name].flag
    return mask


def identities(pid: int | str = "self") -> dict[str, str]:
    """Read the namespace links of a process.

    Parameters
    ----------
    pid:
        A PID as seen from the *reader's* ``/proc``, or ``"self"``.

    Returns
    -------
    dict
        Kind name → link text such as ``"uts:[4026531838]"``, for every kind this kernel has.

    """
    found: dict[str, str] = {}
    for kind in KINDS:
        try:
            found[kind.name] = os.readlink(f"/proc/{pid}/ns/{kind.name}")
        except FileNotFoundError:
            continue  # the kernel was built without this kind (e.g. time before 5.6)
    return found


def os_api_available() -> bool:
    """Tell whether this Python has :func:`os.unshare` and :func:`os.setns` (3.12+)."""
    return hasattr(os, "unshare") and hasattr(os, "setns")


def unshare(flags: int, *, prefer_os: bool = True, libc: Any = None) -> str:
    """Create new namespaces for the calling thread.

    Parameters
    ----------
    flags:
        ``CLONE_NEW*`` mask.
    prefer_os:
        Use :func:`os.unshare` when this Python has it.
    libc:
        Test double for the ctypes path (forces the ctypes path).

    Returns
    -------
    str
        The call that was made, for the demo to print, e.g. ``"libc.unshare(0x6c020000)"``.

    """
    if prefer_os and libc is None and hasattr(os, "unshare"):
        os.unshare(flags)
        return f"os.unshare({_c.flag_names(flags)})"
    _c.unshare(flags, libc=libc)
    return f"libc.unshare({flags:#x})  # {_c.flag_names(flags)}"


def setns(fd: int, nstype: int = 0, *, prefer_os: bool = True, libc: Any = None) -> str:
    """Join the namespace that ``fd`` (an open ``/proc/PID/ns/KIND``) refers to.

    Returns the call made, as :func:`unshare` does.
    """
    if prefer_os and libc is None and hasattr(os, "setns"):
        os.setns(fd, nstype)
        return f"os.setns({fd}, {_c.flag_names(nstype)})"
    _c.setns(fd, nstype, libc=libc)
    return f"libc.setns({fd}, {nstype:#x})"


@contextlib.contextmanager
def entered(path: str, kind: str, *, libc: Any = None) -> Iterator[None]:
    """Join the namespace at ``path`` for the duration of a ``with`` block, then come back.

    The original namespace is kept open as a file descriptor, so returning works even if no
    process is left in it. Use this only in a forked, single-threaded child: it moves the calling
    thread. User namespaces cannot be left this way (a process cannot re-enter an ancestor user
    namespace), so ``kind="user"`` is refused.

    Parameters
    ----------
    path:
        ``/proc/PID/ns/KIND`` of the target.
    kind:
        The kind name; the kernel checks that ``path`` is of this kind.
    libc:
        Test double for the ctypes path.

    """
    if kind == "user":
        raise ValueError("a user namespace cannot be left again; setns into it without 'with'")
    flag = _BY_NAME[kind].flag
    home = os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target, flag, libc=libc)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(home, flag, libc=libc)
    finally:
        os.close(home)


def write_id_maps(outer_uid: int, outer_gid: int, pid: int | str = "self") -> None:
    """Map root inside a fresh user namespace to one ordinary ID outside.

    The rules, which the order here follows (user_namespaces(7)):

    * each map can be written once, and an unprivileged writer may map only its own ID;
    * ``gid_map`` needs ``deny`` in ``setgroups`` first (since Linux 3.19, CVE-2014-8989),
      otherwise an unprivileged writer gets ``EPERM``;
    * a process that dropped privilege with ``setuid()`` itself is not "dumpable", so its own
      ``/proc/self`` files belong to root and the write fails with ``EACCES``;
      ``prctl(PR_SET_DUMPABLE, 1)`` fixes that.

    Parameters
    ----------
    outer_uid, outer_gid:
        The IDs in the parent namespace that root (0) inside should map to.
    pid:
        The process whose maps to write; ``"self"`` after ``unshare(CLONE_NEWUSER)``.

    """
    base = f"/proc/{pid}"
    write_file(f"{base}/uid_map", f"0 {outer_uid} 1\n")
    with contextlib.suppress(FileNotFoundError):  # kernels before 3.19 have no setgroups file
        write_file(f"{base}/setgroups", "deny\n")
    write_file(f"{base}/gid_map", f"0 {outer_gid} 1\n")


def write_file(path: str, text: str) -> None:
    """Write ``text`` to a kernel control file with one ``write(2)``.

    One call matters: the map files reject a map that arrives in pieces. And ``os.open`` is
    much cheaper than ``open()`` in a freshly forked child (no codec set-up, fewer page faults).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
