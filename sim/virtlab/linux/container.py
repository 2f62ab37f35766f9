"""The tiny container: a process layout that avoids the known traps, and its parent-side handle.

::

    your process (notebook, pytest, the CLI)     never changes its own namespaces
     └─ fork → launcher  "virtlab-launch"         single-threaded, own process group
          [join cgroups] → unshare(flags) → [uid/gid maps] → make / private (MS_REC|MS_PRIVATE)
          └─ fork → PID 1  "virtlab-init"         first child: PID 1 of the new PID namespace
               sethostname → mount a fresh /proc → [lo up] → "ready" → payload → "result"
          waitpid(PID 1) → "exit" → _exit

Why each step:

* **Fork first.** ``unshare`` changes the caller. Forking keeps the lab's process where it was,
  and a freshly forked child has one thread, which ``CLONE_NEWUSER`` requires (``EINVAL`` else).
* **Fork again.** ``CLONE_NEWPID`` does not move the caller; only its *next child* becomes PID 1.
* **Private mounts before mounting /proc.** On systemd machines ``/`` is a *shared* mount: a new
  mount namespace still receives and *sends* mount events. Without ``MS_REC|MS_PRIVATE`` the
  container's ``/proc`` mount would appear on the host.
* **Join cgroups before unsharing.** The launcher writes its own PID to ``cgroup.procs`` so that
  PID 1 inherits the group from its first instruction, as runc does. Only our own PID is written.
* **``_exit`` everywhere, die with the parent, one process group.** See :mod:`virtlab.linux.procs`.
  Killing PID 1 from the host kills every process in its PID namespace, and when the last process
  of a namespace exits the kernel frees the namespace and everything in it (mounts, interfaces,
  SysV objects). So cleanup is just: ``SIGKILL`` PID 1, reap the launcher.

Results travel over a pipe as one JSON object per line: ``launched`` (from the launcher), ``ready``
and ``result`` (from PID 1), any events the payload sends, ``exit``, or ``error``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from virtlab.linux import cleanup, namespaces, netdev, procs
from virtlab.linux import libc as _c
from virtlab.linux.channel import LineReader, RemoteError, error_message, raise_remote, write_line

__all__ = ["CONTAINER_FLAGS", "Container", "ContainerError", "ContainerSpec", "Inside",
           "run_container"]

CONTAINER_FLAGS = (_c.CLONE_NEWUTS | _c.CLONE_NEWPID | _c.CLONE_NEWNS | _c.CLONE_NEWNET
                   | _c.CLONE_NEWIPC)


ContainerError = RemoteError  # a step failed with something other than OSError, or exited early


@dataclass(frozen=True)
class ContainerSpec:
    """What to build.

    Attributes
    ----------
    hostname:
        Set in the new UTS namespace.
    flags:
        ``CLONE_NEW*`` mask; ``0`` builds no namespaces at all (the same double fork, used as the
        baseline when measuring).
    rootless:
        Add ``CLONE_NEWUSER`` and map root inside to the caller's own uid/gid outside.
    mount_proc:
        Mount a fresh procfs on ``/proc`` (needs new PID and mount namespaces).
    loopback_up:
        Bring ``lo`` up before the payload runs (the namespaces demo does it itself, to show it).
    cgroup_procs:
        ``cgroup.procs`` files the launcher joins before ``unshare``.
    keep_host_netns:
        Keep the host's network namespace open as :attr:`Inside.host_netns_fd` (for a veth peer).

    """

    hostname: str = "tiny-ctr"
    flags: int = CONTAINER_FLAGS
    rootless: bool = False
    mount_proc: bool = True
    loopback_up: bool = True
    cgroup_procs: tuple[str, ...] = ()
    keep_host_netns: bool = False

    @property
    def unshare_flags(self) -> int:
        """The mask actually passed to ``unshare``."""
        return self.flags | (_c.CLONE_NEWUSER if self.rootless and self.flags else 0)


def _close_fds_except(keep: set[int]) -> None:
    """Close every inherited descriptor we do not need (other containers' pipes, test files)."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):  # the fd that listdir itself used is gone
                os.close(fd)


@dataclass
class Inside:
    """The payload's view from PID 1: a channel to the parent, and what setup did.

    Attributes
    ----------
    spec:
        The container's spec.
    steps:
        What the setup did, in order, as the calls made (for the demo to print).
    host_netns_fd:
        Open host network namespace, if ``spec.keep_host_netns``.

    """

    spec: ContainerSpec
    events_fd: int
    control_fd: int
    steps: list[str] = field(default_factory=list)
    host_netns_fd: int | None = None
    _reader: LineReader | None = field(default=None, repr=False)

    def send(self, kind: str, **data: Any) -> None:
        """Send an event to the parent (JSON-serialisable values only)."""
        write_line(self.events_fd, {"kind": kind, **data})

    def recv(self, timeout_s: float | None = None) -> dict[str, Any] | None:
        """Wait for a message from the parent (:meth:`Container.send`); ``None`` if it hung up."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if self._reader is None:
            self._reader = LineReader(self.control_fd)
        return self._reader.read(deadline)


Payload = Callable[[Inside], Any]


class Container:
    """Parent-side handle: start, talk to, and always clean up one container.

    Use as a context manager; leaving the block (normally, by an exception, a timeout or Ctrl-C)
    kills PID 1, which takes the whole PID namespace with it, and reaps the launcher.

    Parameters
    ----------
    spec:
        What to build.
    payload:
        Runs as PID 1 after setup; its return value (JSON-serialisable) is the result.
    timeout_s:
        Default deadline for each wait.

    """

    def __init__(self, spec: ContainerSpec, payload: Payload, *, timeout_s: float = 10.0) -> None:
        self.spec = spec
        self.payload = payload
        self.timeout_s = timeout_s
        self.launcher_pid = 0
        self.pid1 = 0  # host view
        self.events: list[dict[str, Any]] = []
        self.started_ns = 0
        self._reader: LineReader | None = None
        self._control_fd = -1
        self._exited = False
        self._closed = False

    # -- parent side ------------------------------------------------------------------------
    def start(self) -> Container:
        """Fork the launcher; return at once (use :meth:`wait_for` to follow the setup)."""
        _c.preload()
        events_r, events_w = os.pipe()
        control_r, control_w = os.pipe()
        parent = os.getpid()
        self.started_ns = time.perf_counter_ns()
        pid = procs.fork_child("virtlab-launch")  # registered for the final check at once
        if pid == 0:
            _close_fds_except({events_w, control_r})
            procs.child_main(lambda: self._launcher(parent, events_w, control_r),
                             name="virtlab-launch")
        self.launcher_pid = pid
        os.close(events_w)
        os.close(control_r)
        self._reader = LineReader(events_r)
        self._control_fd = control_w
        # Also set the group from this side: whichever of the two runs first wins the race.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        return self

    def wait_for(self, kind: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Read events until one of ``kind`` arrives; raise the container's error if one comes.

        The launcher's ``launched`` event (which carries PID 1's host PID) is always awaited
        first, so :attr:`pid1` is known after any successful wait: PID 1 may well report
        ``ready`` before its launcher has written ``launched``.
        """
        if kind != "launched" and not self.pid1:
            self.wait_for("launched", timeout_s)
        for seen in self.events:
            if seen["kind"] == kind:
                return seen
        assert self._reader is not None, "start() first"
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            try:
                event = self._reader.read(deadline)
            except TimeoutError:
                waited = self.timeout_s if timeout_s is None else timeout_s
                raise TimeoutError(f"the container sent no {kind!r} within {waited} s") from None
            if event is None:
                raise ContainerError(f"the container exited before sending {kind!r}")
            self._absorb(event)
            if event["kind"] == "error":
                raise_remote(event)
            if event["kind"] == kind:
                return event
            if event["kind"] == "exit":
                raise ContainerError(f"the container exited (status {event['status']}) "
                                     f"before sending {kind!r}")

    def _absorb(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event["kind"] == "launched":
            self.pid1 = int(event["pid1"])
            cleanup.register_process(self.pid1, "virtlab-init")
        elif event["kind"] == "exit":
            self._exited = True

    def _drain(self) -> None:
        """Take in whatever events are already waiting, without blocking."""
        if self._reader is None:
            return
        while True:
            try:
                event = self._reader.read(time.monotonic())
            except (TimeoutError, ValueError, OSError):
                return  # nothing more now (or a garbled line from a killed child)
            if event is None:
                return
            self._absorb(event)

    def result(self, timeout_s: float | None = None) -> Any:
        """Wait for the payload's return value."""
        return self.wait_for("result", timeout_s)["value"]

    def send(self, **message: Any) -> None:
        """Send a message that the payload reads with :meth:`Inside.recv`."""
        write_line(self._control_fd, message)

    def close(self) -> None:
        """Kill and reap everything this container started; idempotent."""
        if self._closed or not self.launcher_pid:
            return
        self._closed = True
        try:
            self._drain()
            if self.pid1 and not self._exited:
                # SIGKILL from an ancestor namespace always reaches a namespace's init. PID 1
                # could have exited a moment ago without our having seen "exit" yet, but a PID is
                # reused only after the PID space wraps around, so the window is negligible.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid1, signal.SIGKILL)
            # The launcher reaps PID 1 and exits; if it does not, kill the whole group.
            procs.kill_and_reap(self.launcher_pid, group=True, grace_s=2.0)
            if self._exited:  # the launcher reported PID 1's exit status: it was reaped
                cleanup.forget_process(self.pid1)
        finally:
            if self._reader is not None:
                os.close(self._reader.fd)
            os.close(self._control_fd)

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- child side -------------------------------------------------------------------------
    def _launcher(self, parent: int, events_w: int, control_r: int) -> int:
        procs.die_with_parent(parent)
        os.setpgid(0, 0)
        spec = self.spec
        inside = Inside(spec, events_w, control_r)
        stage = "join cgroup"
        try:
            for procs_file in spec.cgroup_procs:
                namespaces.write_file(procs_file, str(os.getpid()))  # only ever our own PID
            if spec.keep_host_netns:
                inside.host_netns_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
            call = "(no namespaces)"
            flags = spec.unshare_flags
            outer_uid, outer_gid = os.getuid(), os.getgid()
            if flags:
                stage = "unshare"
                call = namespaces.unshare(flags)
                if flags & _c.CLONE_NEWUSER:
                    stage = "uid/gid maps"
                    namespaces.write_id_maps(outer_uid, outer_gid)
                if flags & _c.CLONE_NEWNS:
                    stage = "make mounts private"
                    _c.mount(None, "/", None, _c.MS_REC | _c.MS_PRIVATE)
                    inside.steps.append('mount(None, "/", None, MS_REC|MS_PRIVATE)')
            stage = "fork PID 1"
            # Keep a handle on *this* /proc: once PID 1 mounts its own procfs over /proc in the
            # mount namespace we share with it, /proc/self no longer resolves for the launcher.
            proc_self = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY)
            launcher = os.getpid()
            pid1 = os.fork()
            if pid1 == 0:
                procs.child_main(lambda: self._init(inside, launcher), name="virtlab-init")
            write_line(events_w, {
                "kind": "launched", "pid1": pid1, "launcher_pid": os.getpid(), "call": call,
                "flags": _c.flag_names(flags), "outer_uid": outer_uid,
                "pid_ns": _readlink("ns/pid", proc_self),
                "pid_for_children": _readlink("ns/pid_for_children", proc_self)})
            os.close(proc_self)
            stage = "wait for PID 1"
            _, status = os.waitpid(pid1, 0)
            write_line(events_w, {"kind": "exit", "status": os.waitstatus_to_exitcode(status)})
            return 0
        except BaseException as exc:  # noqa: BLE001 - report every failure to the parent
            with contextlib.suppress(OSError):
                write_line(events_w, error_message(exc, stage))
            return 1

    def _init(self, inside: Inside, launcher: int) -> int:
        spec = self.spec
        flags = spec.unshare_flags
        stage = "setup"
        try:
            # Die with the launcher. In a new PID namespace getppid() is 0 (the parent lives
            # outside), so the usual "did it already die?" check only works without one.
            _c.prctl(_c.PR_SET_PDEATHSIG, int(signal.SIGKILL))
            if not flags & _c.CLONE_NEWPID and os.getppid() != launcher:
                return 1
            if flags & _c.CLONE_NEWUTS:
                stage = "sethostname"
                _c.sethostname(spec.hostname)
                inside.steps.append(f"sethostname({spec.hostname!r})")
            if spec.mount_proc and flags & _c.CLONE_NEWNS and flags & _c.CLONE_NEWPID:
                stage = "mount /proc"
                _c.mount("proc", "/proc", "proc", _c.MS_NOSUID | _c.MS_NODEV | _c.MS_NOEXEC)
                inside.steps.append('mount("proc", "/proc", "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC)')
            if spec.loopback_up and flags & _c.CLONE_NEWNET:
                stage = "bring lo up"
                netdev.set_link_up("lo")
                inside.steps.append('ioctl(SIOCSIFFLAGS, "lo", IFF_UP)')
            inside.send("ready", steps=inside.steps)
            stage = "payload"
            value = self.payload(inside)
            inside.send("result", value=value)
            return 0
        except BaseException as exc:  # noqa: BLE001 - report every failure to the parent
            with contextlib.suppress(OSError):
                write_line(inside.events_fd, error_message(exc, stage))
            return 1


def _readlink(path: str, dir_fd: int) -> str | None:
    try:
        return os.readlink(path, dir_fd=dir_fd)
    except OSError:
        return None


def run_container(spec: ContainerSpec, payload: Payload, *, timeout_s: float = 10.0) -> Any:
    """Build a container, run ``payload`` as its PID 1, return the result; nothing is left over."""
    with Container(spec, payload, timeout_s=timeout_s) as ctr:
        return ctr.result()
