"""Forked-child discipline: name it, tie it to its parent, always ``_exit``, always reap.

Three habits keep a forked Python child from doing damage:

* **Every path ends in** :func:`os._exit`. A child that lets an exception propagate unwinds into
  the *parent's* code (its ``finally`` blocks, pytest's machinery, ...), running cleanup twice.
  :func:`child_main` wraps the child's work so that cannot happen.
* **It dies with its parent.** ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` asks the kernel to kill the
  child when the parent dies, even if the parent is killed with ``SIGKILL`` and runs no cleanup.
* **It has a recognisable name.** Writing ``/proc/self/comm`` (what ``ps`` and ``top`` show) makes
  every process of ours start with ``virtlab-``, so a leak check can find strays however they
  were reparented.

The parent side gets :func:`kill_and_reap` and :func:`signals_as_interrupts`, which turns the
first ``SIGINT``/``SIGTERM``/``SIGHUP`` into :class:`KeyboardInterrupt` so that the same
``finally`` blocks that handle Ctrl-C also run when a test harness or ``timeout(1)`` stops the
demo, and ignores the ones after it so that nothing cuts that cleanup short. Every child is
registered with :mod:`virtlab.linux.cleanup`, which checks at the end that it is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

from virtlab.linux import cleanup
from virtlab.linux import libc as _c
from virtlab.linux.channel import LineReader, RemoteError, error_message, raise_remote, write_line

__all__ = [
    "NAME_PREFIX",
    "Interruption",
    "child_main",
    "die_with_parent",
    "fork_child",
    "kill_and_reap",
    "run_forked",
    "set_name",
    "signals_as_interrupts",
    "virtlab_processes",
    "wait_exit",
]

NAME_PREFIX = "virtlab-"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def set_name(name: str) -> None:
    """Set the calling thread's ``comm`` (15 characters at most) for ``ps`` and leak checks."""
    # os.open/os.write, not open(): right after fork a text-mode open() costs about a
    # millisecond of page faults and codec set-up, which would show up in start-up timings.
    fd = os.open("/proc/thread-self/comm", os.O_WRONLY)
    try:
        os.write(fd, name[:15].encode())
    finally:
        os.close(fd)


def die_with_parent(parent_pid: int) -> None:
    """Ask for ``SIGKILL`` when the parent dies; exit now if it already has.

    The check after ``prctl`` closes the race where the parent died between ``fork`` and here:
    the child would then have been reparented and would never get the signal.
    """
    _c.prctl(_c.PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent_pid:
        os._exit(1)


def child_main(work: Callable[[], int], name: str | None = None) -> NoReturn:
    """Run ``work`` in a freshly forked child and leave with :func:`os._exit`, whatever happens.

    Parameters
    ----------
    work:
        Returns the exit status.
    name:
        Optional ``comm`` for the child.

    """
    status = 70  # EX_SOFTWARE: what remains if anything below fails
    try:
        # A child must not run the parent's handlers. Ctrl-C and a closed terminal reach the
        # whole foreground process group; they are the parent's to handle (it kills its
        # children on the way out), so a child ignores them instead of dying half-way through
        # a conversation with the parent. SIGTERM still ends it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if name:
            set_name(name)
        status = work()
    except BrokenPipeError:
        status = 1  # the parent stopped listening (it was interrupted): nothing left to tell it
    except BaseException:  # noqa: BLE001 - the child must reach _exit on every path
        with contextlib.suppress(Exception):
            traceback.print_exc(file=sys.stderr)
    finally:
        os._exit(status)


def fork_child(name: str) -> int:
    """:func:`os.fork` with stop signals blocked across it; the child ignores Ctrl-C at once.

    Without the mask, a Ctrl-C landing in the child between ``fork`` and :func:`child_main`
    would raise :class:`KeyboardInterrupt` there and unwind into the *parent's* code (its
    ``finally`` blocks would run twice, once per process). In the parent, the child is
    registered with :mod:`virtlab.linux.cleanup` before any signal can interrupt.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        else:
            cleanup.register_process(pid, name)
        return pid
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def wait_exit(pid: int, timeout_s: float) -> int | None:
    """Reap ``pid`` if it exits within ``timeout_s``; return its wait status, or ``None``."""
    deadline = time.monotonic() + timeout_s
    pause = 0.0001  # start short: most children are already exiting when we get here
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0  # already reaped elsewhere
        if done:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.01)


def kill_and_reap(pid: int, *, group: bool = False, grace_s: float = 0.0) -> int:
    """Make sure a child of ours is gone and reaped.

    Parameters
    ----------
    pid:
        Our child.
    group:
        Kill its whole process group (``pid`` must be the group leader).
    grace_s:
        Wait this long for a voluntary exit before ``SIGKILL``.

    Returns
    -------
    int
        The wait status.

    """
    if grace_s > 0:
        status = wait_exit(pid, grace_s)
        if status is not None:
            cleanup.forget_process(pid)
            return status
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return 0
    finally:
        cleanup.forget_process(pid)


@dataclass
class Interruption:
    """The signal that stopped a block, and how many more came while it was cleaning up.

    Attributes
    ----------
    signum:
        The first ``SIGINT``/``SIGTERM``/``SIGHUP`` received, or ``None``.
    ignored:
        Further stop signals received after it (or after :meth:`disarm`), and ignored so that
        cleanup runs to the end.
    armed:
        Whether the first stop signal still raises :class:`KeyboardInterrupt`.

    """

    signum: int | None = None
    ignored: int = 0
    armed: bool = True

    @property
    def exit_status(self) -> int:
        """128 + the signal number: 130 for ``SIGINT``, 143 for ``SIGTERM``, 129 for ``SIGHUP``."""
        return 128 + (self.signum or signal.SIGINT)

    @property
    def name(self) -> str:
        """The first signal's name, e.g. ``SIGTERM``."""
        return signal.Signals(self.signum or signal.SIGINT).name

    def disarm(self) -> None:
        """From now on only count signals: the work is over and the final checks must run."""
        self.armed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None and self.armed:
            self.signum = signum
            raise KeyboardInterrupt(f"stopped by {self.name}")
        self.ignored += 1  # cleanup is under way: a second Ctrl-C must not cut it short


_active: Interruption | None = None


@contextlib.contextmanager
def signals_as_interrupts(*, keep_ignoring: bool = False) -> Iterator[Interruption]:
    """Turn the first stop signal into :class:`KeyboardInterrupt`; count and ignore later ones.

    Python turns only ``SIGINT`` (Ctrl-C) into :class:`KeyboardInterrupt`, and it does so again
    for a second Ctrl-C, in the middle of the ``finally`` blocks the first one started; the
    default action of ``SIGTERM`` is to die without running any ``finally``. Here the first of
    ``SIGINT``, ``SIGTERM`` and ``SIGHUP`` raises :class:`KeyboardInterrupt` (one cleanup path for
    Ctrl-C, ``kill``, a closed terminal and test timeouts), and every later one is recorded in
    the yielded :class:`Interruption` and otherwise ignored, so the cleanup it started cannot be
    interrupted.

    Parameters
    ----------
    keep_ignoring:
        Leave stop signals ignored when the block ends instead of restoring the previous
        handlers: for a command that only has to report and exit after it (a burst of signals
        can outlast the cleanup).

    Nested blocks share the outermost one's state. Only the main thread may install handlers;
    elsewhere this yields a state that never fires.

    """
    global _active  # noqa: PLW0603 - one signal disposition per process
    if threading.current_thread() is not threading.main_thread():
        yield Interruption()
        return
    if _active is not None:
        yield _active
        return
    state = Interruption()
    previous = {sig: signal.signal(sig, state._handle) for sig in _STOP_SIGNALS}
    _active = state
    try:
        yield state
    finally:
        _active = None
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if keep_ignoring else handler)


def virtlab_processes() -> list[tuple[int, str]]:
    """Every live process whose ``comm`` starts with ``virtlab-`` (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="ascii", errors="replace") as comm:
                name = comm.read().strip()
        except OSError:
            continue  # exited while we looked
        if name.startswith(NAME_PREFIX):
            found.append((int(entry), name))
    return found


def run_forked(work: Callable[[], Any], *, timeout_s: float = 10.0,
               name: str = "virtlab-helper") -> Any:
    """Run ``work`` in a forked child and return its (JSON-serialisable) result.

    The child may change its own namespaces, uid or affinity freely: none of it reaches the
    caller. An exception in the child is raised again here (see :mod:`virtlab.linux.channel`);
    a child that takes longer than ``timeout_s`` is killed and :class:`TimeoutError` raised.
    """
    _c.preload()
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    pid = fork_child(name)
    if pid == 0:
        os.close(read_fd)

        def body() -> int:
            die_with_parent(parent)
            try:
                write_line(write_fd, {"kind": "result", "value": work()})
                return 0
            except BrokenPipeError:
                return 1  # the parent is gone or stopped reading (Ctrl-C): nobody to tell
            except BaseException as exc:  # noqa: BLE001 - report every failure to the parent
                with contextlib.suppress(OSError):  # the parent may have stopped reading
                    write_line(write_fd, error_message(exc, name))
                return 1

        child_main(body, name=name)
    os.close(write_fd)
    try:
        message = LineReader(read_fd).read(time.monotonic() + timeout_s)
        if message is None:
            raise RemoteError(f"{name} exited without a result")
        if message["kind"] == "error":
            raise_remote(message)
        return message["value"]
    finally:
        os.close(read_fd)
        kill_and_reap(pid, grace_s=1.0)
