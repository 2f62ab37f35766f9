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
"""

from __future__ import annotations

import gc
import os
import socket
import statistics
import struct
import time
from collections.abc import Callable

from virtlab.linux import libc as _c
from virtlab.linux import procs

__all__ = ["Server", "bulk_mib_s", "rtt_us", "syscall_cost_ns", "unshare_cost_us"]

_SOCKET_TIMEOUT_S = 20.0
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

    Protocol, one connection per request: the client sends ``b"B"`` and an 8-byte length, then
    that many bytes, and gets ``b"k"`` back; or ``b"R"`` and then echoes single bytes until it
    closes; or ``b"Q"`` and the server exits.

    Parameters
    ----------
    address:
        Where to listen (port 0 picks a free one).

    """

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((address, 0))
        self.listener.listen(4)
        self.address: tuple[str, int] = self.listener.getsockname()
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            procs.child_main(lambda: self._serve(parent), name="virtlab-server")
        self.listener.close()

    def _serve(self, parent: int) -> int:
        procs.die_with_parent(parent)
        self.listener.settimeout(_SOCKET_TIMEOUT_S)
        buffer = bytearray(_CHUNK)
        while True:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                return 0  # nobody came for a long time: the parent is done or gone
            with conn:
                try:
                    if not self._handle(conn, buffer):
                        return 0
                except OSError:
                    continue  # the client went away mid-request (e.g. Ctrl-C): serve the next

    @staticmethod
    def _handle(conn: socket.socket, buffer: bytearray) -> bool:
        """Serve one request; ``False`` means quit."""
        conn.settimeout(_SOCKET_TIMEOUT_S)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        command = conn.recv(1)
        if command == b"Q" or not command:
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
            with socket.create_connection(self.address, timeout=2.0) as conn:
                conn.sendall(b"Q")
        except OSError:
            pass  # already gone: the reap below still runs
        procs.kill_and_reap(self.pid, grace_s=2.0)


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed early")
        data += chunk
    return data


def bulk_mib_s(address: tuple[str, int], nbytes: int) -> float:
    """Send ``nbytes`` to a :class:`Server` and return the rate in MiB/s (until its ack)."""
    payload = bytes(_CHUNK)
    with socket.create_connection(address, timeout=_SOCKET_TIMEOUT_S) as conn:
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


def rtt_us(address: tuple[str, int], count: int) -> dict[str, float]:
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
    with socket.create_connection(address, timeout=_SOCKET_TIMEOUT_S) as conn:
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
