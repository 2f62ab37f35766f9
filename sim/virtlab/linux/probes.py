"""Micro-benchmarks that run *inside* a process: namespace creation, syscalls, TCP.

Each probe is a plain function that :mod:`virtlab.linux.calibrate` runs in a forked child, once
in the host's namespaces and once as PID 1 of a container, so the two runs differ only in the
namespaces around them.

Traps these probes avoid (each one measured, see ``docs/namespaces.md``):

* **Copy-on-write after fork.** The first ctypes call in a fresh child pays tens of µs of page
  faults. :func:`unshare_cost_us` therefore makes three ``unshare(0)`` calls (which do nothing)
  before timing the real one.
* **Interpreter overhead.** ``os.getpid()`` from Python costs the syscall *plus* a builtin call.
  :func:`syscall_cost_ns` times an identical loop over ``gc.isenabled()``, a builtin with the same
  calling convention that makes no syscall, and subtracts it.
* **Hung peers.** Every socket has a timeout; a server that hears nothing exits.
* **Strangers.** A loopback port is open to every local user; the servers serve only clients
  that present their random token first, and shrug off everything else (see :class:`Server`).
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import os
import secrets
import select
import socket
import statistics
import struct
import time
from collections.abc import Callable

from virtlab.linux import libc as _c
from virtlab.linux import procs

__all__ = ["Server", "bulk_mib_s", "connect", "rtt_us", "syscall_cost_ns",
           "unshare_cost_us"]

_SOCKET_TIMEOUT_S = 20.0
_TOKEN_WAIT_S = 5.0  # ours send the token right after connecting; strangers get this long
TOKEN_BYTES = 16
_CHUNK = 1 << 20  # 1 MiB per sendall


def unshare_cost_us(flags: int) -> float:
    """Time one ``unshare(flags)`` in the calling process, in µs (call in a throw-away child)."""
    for _ in range(3):
        _c.unshare(0)  # warm up: fault in ctypes' and libc's pages after the fork
    start = time.perf_counter_ns()
    _c.unshare(flags)
    return (time.perf_counter_ns() - start) / 1e3


def _per_call_ns(func: Callable[[], object], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        func()
    return (time.perf_counter_ns() - start) / calls


def syscall_cost_ns(calls: int = 200_000, repeats: int = 3) -> dict[str, float]:
    """Measure a null syscall's cost from Python, in ns per call.

    Returns
    -------
    dict
        ``getpid_ns`` (the whole ``os.getpid()`` call), ``baseline_ns`` (``gc.isenabled()``) and
        ``syscall_ns``: their difference, medians over ``repeats``.

    """
    getpid = [_per_call_ns(os.getpid, calls) for _ in range(repeats)]
    baseline = [_per_call_ns(gc.isenabled, calls) for _ in range(repeats)]
    getpid_ns, baseline_ns = statistics.median(getpid), statistics.median(baseline)
    return {"getpid_ns": getpid_ns, "baseline_ns": baseline_ns,
            "syscall_ns": getpid_ns - baseline_ns}


class Server:
    """A TCP server in a forked child: bulk sink and 1-byte echo, until told to quit.

    Protocol, one connection per request. The client first sends the server's :attr:`token`
    (16 random bytes, known only to the process that made the server and its children); then
    ``b"B"`` and an 8-byte length, then that many bytes, and gets ``b"k"`` back; or ``b"R"`` and
    then echoes single bytes until it closes; or ``b"Q"`` and the server exits.

    Any local user can connect to a port on ``127.0.0.1``, and calibration may run as root. So a
    connection that does not start with the token within :data:`_TOKEN_WAIT_S` (an empty one,
    garbage, a port scanner, a stranger's ``Q``) is closed and ignored: it can neither stop the
    server nor feed the measurement. Connections waiting for their token are watched together
    with ``select``, so a stranger who connects and sends nothing does not hold up ours.

    Parameters
    ----------
    address:
        Where to listen (port 0 picks a free one).

    """

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.token = secrets.token_bytes(TOKEN_BYTES)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((address, 0))
        self.listener.listen(64)
        self.address: tuple[str, int] = self.listener.getsockname()
        parent = os.getpid()
        self.pid = procs.fork_child("virtlab-server")
        if self.pid == 0:
            procs.child_main(lambda: self._serve(parent), name="virtlab-server")
        self.listener.close()

    def _serve(self, parent: int) -> int:
        procs.die_with_parent(parent)
        buffer = bytearray(_CHUNK)
        waiting: dict[socket.socket, tuple[float, bytes]] = {}  # connection -> (deadline, got)
        idle_until = time.monotonic() + _SOCKET_TIMEOUT_S
        while True:
            now = time.monotonic()
            for conn, (deadline, _) in list(waiting.items()):
                if now > deadline:  # connected, never said the token: a stranger
                    del waiting[conn]
                    conn.close()
            if now > idle_until:
                return 0  # nobody of ours came for a long time: the parent is done or gone
            wake = min([idle_until, *(deadline for deadline, _ in waiting.values())])
            ready, _, _ = select.select([self.listener, *waiting], [], [], max(0.0, wake - now))
            for sock in ready:
                if sock is self.listener:
                    with contextlib.suppress(OSError):
                        conn, _ = self.listener.accept()
                        conn.setblocking(False)
                        waiting[conn] = (time.monotonic() + _TOKEN_WAIT_S, b"")
                    continue
                deadline, got = waiting.pop(sock)
                try:
                    chunk = sock.recv(TOKEN_BYTES - len(got))
                except OSError:
                    chunk = b""
                got += chunk
                if chunk and len(got) < TOKEN_BYTES:
                    waiting[sock] = (deadline, got)  # a token split over packets: wait for more
                    continue
                if not chunk or not hmac.compare_digest(got, self.token):
                    sock.close()  # empty, garbage or a wrong token: not ours
                    continue
                idle_until = time.monotonic() + _SOCKET_TIMEOUT_S
                with sock:
                    try:
                        sock.setblocking(True)
                        if not self._handle(sock, buffer):
                            return 0
                    except OSError:
                        pass  # the client went away mid-request (e.g. Ctrl-C): serve the next

    @staticmethod
    def _handle(conn: socket.socket, buffer: bytearray) -> bool:
        """Serve one request from a client that sent the token; ``False`` means quit."""
        conn.settimeout(_SOCKET_TIMEOUT_S)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        command = conn.recv(1)
        if command == b"Q":
            return False
        if command == b"B":
            (remaining,) = struct.unpack("!Q", _recv_exact(conn, 8))
            while remaining:
                got = conn.recv_into(buffer, min(remaining, _CHUNK))
                if not got:
                    break
                remaining -= got
            conn.sendall(b"k")
        elif command == b"R":
            while byte := conn.recv(1):
                conn.sendall(byte)
        return True

    def stop(self) -> None:
        """Tell the server to exit and reap it (killing it if it does not answer)."""
        try:
            with connect(self.address, self.token, timeout_s=2.0) as conn:
                conn.sendall(b"Q")
        except OSError:
            pass  # already gone: the reap below still runs
        procs.kill_and_reap(self.pid, grace_s=2.0)


def connect(address: tuple[str, int], token: bytes,
            timeout_s: float = _SOCKET_TIMEOUT_S) -> socket.socket:
    """Connect to a :class:`Server` and identify ourselves with its token."""
    conn = socket.create_connection(address, timeout=timeout_s)
    try:
        conn.sendall(token)
    except BaseException:
        conn.close()
        raise
    return conn


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed early")
        data += chunk
    return data


def bulk_mib_s(address: tuple[str, int], token: bytes, nbytes: int) -> float:
    """Send ``nbytes`` to a :class:`Server` and return the rate in MiB/s (until its ack)."""
    payload = bytes(_CHUNK)
    with connect(address, token) as conn:
        start = time.perf_counter_ns()
        conn.sendall(b"B" + struct.pack("!Q", nbytes))
        remaining = nbytes
        while remaining:
            view = memoryview(payload)[:min(remaining, _CHUNK)]
            conn.sendall(view)
            remaining -= len(view)
        if conn.recv(1) != b"k":
            raise ConnectionError("no acknowledgement from the bulk sink")
        elapsed_s = (time.perf_counter_ns() - start) / 1e9
    return nbytes / (1 << 20) / elapsed_s


def rtt_us(address: tuple[str, int], token: bytes, count: int) -> dict[str, float]:
    """Round trips of a 1-byte ping-pong with a :class:`Server`, in µs.

    Returns
    -------
    dict
        ``median`` and ``mean`` over ``count`` timed pings. Use the median: on a VM a few pings
        in a thousand stall for milliseconds (an idle vCPU being woken up), which drags the
        mean to several times the typical value and buries a sub-µs difference in noise.

    """
    samples = []
    clock = time.perf_counter_ns
    with connect(address, token) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"R")
        for _ in range(min(50, count)):  # warm up: wake both sides, fill the caches
            conn.sendall(b"x")
            conn.recv(1)
        for _ in range(count):
            start = clock()
            conn.sendall(b"x")
            if not conn.recv(1):
                raise ConnectionError("echo server closed early")
            samples.append(clock() - start)
    return {"median": statistics.median(samples) / 1e3, "mean": statistics.fmean(samples) / 1e3}
