"""The C library, loaded lazily, with declared prototypes and ``errno`` turned into ``OSError``.

Why ctypes and not a C extension: the lab wants students to *see* the system calls. Each wrapper
below is one libc function with its C prototype written out (``argtypes``/``restype``), so a
reader can hold it next to the man page.

Three rules make ctypes behave:

1. Load libc with ``use_errno=True``. ctypes then copies ``errno`` into a private, thread-local
   slot right after each foreign call, before the interpreter can clobber it;
   :func:`ctypes.get_errno` reads that slot.
2. Declare every prototype. Without ``argtypes`` ctypes guesses, and a Python ``int`` passed for a
   ``size_t`` or ``unsigned long`` is silently truncated to a C ``int``.
3. Never ignore a return value. ``-1`` means failure; we raise ``OSError(err, strerror, target)``,
   and the constructor picks the subclass: ``EPERM`` gives :class:`PermissionError`, ``ENOENT``
   gives :class:`FileNotFoundError`, ``EINVAL`` stays a plain :class:`OSError`.

The library is loaded on first use (``_libc()``), never at import, so ``virtlab`` imports on macOS
and Windows too. Every wrapper takes an optional ``libc`` argument: tests pass a fake object whose
functions call :func:`ctypes.set_errno` and return ``-1``, which exercises the error paths on any
platform without privilege.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWTIME",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "IPC_CREAT",
    "IPC_RMID",
    "MNT_DETACH",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_REC",
    "PR_GET_DUMPABLE",
    "PR_SET_DUMPABLE",
    "PR_SET_NAME",
    "PR_SET_PDEATHSIG",
    "flag_names",
    "mount",
    "preload",
    "prctl",
    "sethostname",
    "setns",
    "shmctl",
    "shmget",
    "umount2",
    "unshare",
]

# Namespace flags, named and valued as in <linux/sched.h>. They equal os.CLONE_* on Python >= 3.12.
CLONE_NEWTIME = 0x00000080  # Linux 5.6
CLONE_NEWNS = 0x00020000  # mount namespace (the first one, hence the generic name)
CLONE_NEWCGROUP = 0x02000000  # Linux 4.6
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags from <linux/mount.h>.
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 16384
MS_PRIVATE = 1 << 18
# umount2(2) flag: detach now, clean up when no longer busy.
MNT_DETACH = 2

# prctl(2) options from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15

# SysV IPC, <sys/ipc.h>.
IPC_CREAT = 0o1000
IPC_RMID = 0

_FLAG_NAMES = {
    CLONE_NEWNS: "CLONE_NEWNS",
    CLONE_NEWCGROUP: "CLONE_NEWCGROUP",
    CLONE_NEWUTS: "CLONE_NEWUTS",
    CLONE_NEWIPC: "CLONE_NEWIPC",
    CLONE_NEWUSER: "CLONE_NEWUSER",
    CLONE_NEWPID: "CLONE_NEWPID",
    CLONE_NEWNET: "CLONE_NEWNET",
    CLONE_NEWTIME: "CLONE_NEWTIME",
}

# name -> (restype, argtypes): the C prototypes, written out once.
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "unshare": (ctypes.c_int, [ctypes.c_int]),
    "setns": (ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
    "sethostname": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t]),
    "mount": (
        ctypes.c_int,
        [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p],
    ),
    "umount2": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_int]),
    # prctl is variadic in C; passing all five arguments as unsigned long is what glibc expects.
    "prctl": (
        ctypes.c_int,
        [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong],
    ),
    "shmget": (ctypes.c_int, [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]),
    "shmctl": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]),
}


def flag_names(flags: int) -> str:
    """Spell a namespace flag mask the way the kernel headers do.

    Parameters
    ----------
    flags:
        A bitwise OR of ``CLONE_NEW*`` values.

    Returns
    -------
    str
        For example ``"CLONE_NEWUTS|CLONE_NEWNET"``; ``"0"`` for no flags; unknown bits in hex.

    """
    names = [name for bit, name in sorted(_FLAG_NAMES.items()) if flags & bit]
    rest = flags & ~sum(_FLAG_NAMES)
    if rest:
        names.append(hex(rest))
    return "|".join(names) if names else "0"


@functools.cache
def _load_libc() -> ctypes.CDLL:
    """Load a *private* libc handle and declare the prototypes on it.

    A private :class:`ctypes.CDLL` instance owns its own function objects, so setting ``argtypes``
    here cannot change how any other library in the process calls libc.
    """
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, f"Linux namespaces need Linux, not {sys.platform}", "libc")
    lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    for name, (restype, argtypes) in _PROTOTYPES.items():
        func = getattr(lib, name)
        func.restype = restype
        func.argtypes = argtypes
    return lib


def _libc(libc: Any = None) -> Any:
    """Return ``libc`` if given (a test double), else the lazily loaded C library."""
    return libc if libc is not None else _load_libc()


def preload() -> None:
    """Load libc now, in the parent, so forked children inherit the loaded handle.

    :func:`ctypes.util.find_library` runs ``ldconfig -p`` (a subprocess) to find the file; done
    in every fresh child instead, that costs milliseconds each time and distorts timings.
    """
    if sys.platform.startswith("linux"):
        _load_libc()


def _check(ret: int, target: str | Callable[[], str]) -> int:
    """Turn the C convention (``-1`` plus ``errno``) into a Python exception.

    Parameters
    ----------
    ret:
        The function's return value.
    target:
        What the call acted on (a path, a flag mask), or a function that spells it (evaluated
        only on failure, so that timing a call does not time the spelling); it becomes
        ``OSError.filename``: ``[Errno 1] Operation not permitted: 'CLONE_NEWNET'``.

    """
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target if isinstance(target, str) else target())
    return ret


def _opt_bytes(value: str | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return os.fsencode(value)


def unshare(flags: int, *, libc: Any = None) -> None:
    """``unshare(2)``: move the *calling thread* into new namespaces.

    ``CLONE_NEWPID`` is special: the caller stays where it is and only its next child becomes
    PID 1 of the new namespace.

    Parameters
    ----------
    flags:
        ``CLONE_NEW*`` bits.
    libc:
        Optional test double.

    """
    _check(_libc(libc).unshare(flags), lambda: flag_names(flags))


def setns(fd: int, nstype: int = 0, *, libc: Any = None) -> None:
    """``setns(2)``: move the calling thread into the namespace that ``fd`` refers to.

    Parameters
    ----------
    fd:
        An open file descriptor for ``/proc/PID/ns/KIND``.
    nstype:
        ``0`` accepts any kind; a ``CLONE_NEW*`` value makes the kernel check the kind (``EINVAL``
        on a mismatch).
    libc:
        Optional test double.

    """
    _check(_libc(libc).setns(fd, nstype), lambda: f"fd {fd} ({flag_names(nstype)})")


def sethostname(name: str, *, libc: Any = None) -> None:
    """``sethostname(2)`` in the caller's UTS namespace (needs ``CAP_SYS_ADMIN`` there)."""
    raw = name.encode()
    _check(_libc(libc).sethostname(raw, len(raw)), name)


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
    *,
    libc: Any = None,
) -> None:
    """``mount(2)``.

    Two calls matter for the container: ``mount(None, "/", None, MS_REC | MS_PRIVATE)`` stops
    mount events propagating back to the host, and ``mount("proc", "/proc", "proc", ...)``
    gives the new PID namespace its own view of ``/proc``.
    """
    raw_data = _opt_bytes(data)
    data_ptr = ctypes.c_char_p(raw_data) if raw_data is not None else None
    ret = _libc(libc).mount(_opt_bytes(source), os.fsencode(target), _opt_bytes(fstype), flags,
                            data_ptr)
    _check(ret, target)


def umount2(target: str, flags: int = 0, *, libc: Any = None) -> None:
    """``umount2(2)``; ``MNT_DETACH`` detaches now and frees the mount once it is idle."""
    _check(_libc(libc).umount2(os.fsencode(target), flags), target)


def prctl(option: int, arg2: int = 0, arg3: int = 0, *, libc: Any = None) -> int:
    """``prctl(2)`` with up to two arguments; returns the call's (non-negative) result."""
    return _check(_libc(libc).prctl(option, arg2, arg3, 0, 0), f"prctl({option})")


def shmget(key: int, size: int, shmflg: int, *, libc: Any = None) -> int:
    """``shmget(2)``: create or look up a SysV shared-memory segment; returns its id."""
    return _check(_libc(libc).shmget(key, size, shmflg), f"shm key {key:#x}")


def shmctl(shmid: int, cmd: int, *, libc: Any = None) -> None:
    """``shmctl(2)`` without a buffer argument (enough for ``IPC_RMID``)."""
    _check(_libc(libc).shmctl(shmid, cmd, None), f"shm id {shmid}")
