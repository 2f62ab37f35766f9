"""Application servers in the guests: a step vocabulary and three workloads built from it.

A server request is a list of **steps** (``[[guests.workloads.steps]]`` in a scenario file,
``kind`` names the step):

==================  ===========================================================================
``cpu``             ``us`` of user-space work
``syscall``         ``count`` system calls beyond the path's own ``recv``/``send`` (epoll,
                    accept, open, fsync, ...)
``page_fault``      ``count`` page faults
``context_switch``  ``count`` address-space switches
``tlb_miss``        ``count`` TLB misses (each a page walk)
``timer``           ``count`` timer interrupts or IPIs
``receive``         a message of ``bytes`` from the client (it builds it, the wire, the path)
``send``            a message of ``bytes`` to the client (the path, the wire, the client reads it)
``disk_read``       a ``bytes`` read, with ``probability`` (e.g. a buffer-pool miss ratio)
``disk_write``      a ``bytes`` write, optionally followed by a ``flush`` (fsync)
==================  ===========================================================================

``count`` may be fractional (an average per request). The compute steps (the first six) are
priced by :mod:`virtlab.compute` for the guest's approach and CPU support, so the same server
runs on every approach and era. Consecutive compute steps run as one block on one of the
server's **application threads** (``threads``; a single-threaded event loop has 1), which is
separate from the guest's vCPUs and the host's cores: the block needs a thread, then a vCPU,
then a core.

:class:`Server` takes the steps as written; :class:`KeyValueCache`, :class:`WebServer` and
:class:`OltpDatabase` describe a memcached/redis-like cache, an nginx-like web server and an
InnoDB-like database by their own parameters and generate their steps (:meth:`steps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from virtlab.compute import (
    CONTEXT_SWITCH,
    EVENTS,
    PAGE_FAULT,
    SYSCALL,
    TIMER,
    TLB_MISS,
    ComputeCosts,
)
from virtlab.errors import ConfigError
from virtlab.params import Params, param
from virtlab.records import EXIT, GUEST, HOST, PHASES

__all__ = ["CpuWork", "Syscalls", "PageFaults", "ContextSwitches", "TlbMisses", "Timers",
           "Receive", "Send", "DiskRead", "DiskWrite", "ServerStep", "Server", "KeyValueCache",
           "WebServer", "OltpDatabase", "SERVER_KINDS", "SERVER_TABLES", "compile_plan",
           "OP_CPU", "OP_RECV", "OP_SEND", "OP_DISK"]

_COUNT_DOC = "Events per request (may be fractional: an average)."


def _count() -> Any:
    return param(1.0, lo=0.0, hi=1e9, source="-", doc=_COUNT_DOC)


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuWork(Params):
    """User-space work of the application."""

    kind: str = param("cpu", choices=("cpu",), source="-", doc="Step type tag.")
    us: float = param(1.0, unit="µs", lo=0.0, hi=1e9, source="-", doc="CPU time per request.")
    label: str = param("application work", source="-", doc="Name in traces and breakdowns.")


@dataclass(frozen=True, slots=True, kw_only=True)
class Syscalls(Params):
    """System calls beyond the path's own ``recv``/``send`` (which the path charges)."""

    kind: str = param("syscall", choices=("syscall",), source="-", doc="Step type tag.")
    count: float = _count()
    label: str = param("syscalls", source="-", doc="Name in traces (e.g. 'epoll_wait').")


@dataclass(frozen=True, slots=True, kw_only=True)
class PageFaults(Params):
    """Page faults (a fresh anonymous page each)."""

    kind: str = param("page_fault", choices=("page_fault",), source="-", doc="Step type tag.")
    count: float = _count()


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextSwitches(Params):
    """Address-space switches (to another process and back count as two)."""

    kind: str = param("context_switch", choices=("context_switch",), source="-",
                      doc="Step type tag.")
    count: float = _count()


@dataclass(frozen=True, slots=True, kw_only=True)
class TlbMisses(Params):
    """TLB misses: one page walk each."""

    kind: str = param("tlb_miss", choices=("tlb_miss",), source="-", doc="Step type tag.")
    count: float = _count()


@dataclass(frozen=True, slots=True, kw_only=True)
class Timers(Params):
    """Timer interrupts or inter-processor interrupts taken by the server's CPU."""

    kind: str = param("timer", choices=("timer",), source="-", doc="Step type tag.")
    count: float = _count()


@dataclass(frozen=True, slots=True, kw_only=True)
class Receive(Params):
    """A message from the client: it builds it, sends it, the path brings it up."""

    kind: str = param("receive", choices=("receive",), source="-", doc="Step type tag.")
    bytes: int = param(100, unit="bytes", lo=1, hi=1 << 30, source="-", doc="Message size.")


@dataclass(frozen=True, slots=True, kw_only=True)
class Send(Params):
    """A message to the client: the path sends it, the client reads it."""

    kind: str = param("send", choices=("send",), source="-", doc="Step type tag.")
    bytes: int = param(100, unit="bytes", lo=1, hi=1 << 30, source="-", doc="Message size.")


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskRead(Params):
    """A read from the disk, done with ``probability`` per request."""

    kind: str = param("disk_read", choices=("disk_read",), source="-", doc="Step type tag.")
    bytes: int = param(4096, unit="bytes", lo=1, hi=1 << 30, source="-", doc="Read size.")
    probability: float = param(1.0, lo=0.0, hi=1.0, source="-",
                               doc="Chance that a request does this read (e.g. a miss ratio).")
    sequential: bool = param(False, source="-", doc="Sequential rather than random.")


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskWrite(Params):
    """A write to the disk, optionally followed by a flush (fsync)."""

    kind: str = param("disk_write", choices=("disk_write",), source="-", doc="Step type tag.")
    bytes: int = param(4096, unit="bytes", lo=1, hi=1 << 30, source="-", doc="Write size.")
    probability: float = param(1.0, lo=0.0, hi=1.0, source="-",
                               doc="Chance that a request does this write.")
    sequential: bool = param(True, source="-", doc="Sequential (a log) rather than random.")
    flush: bool = param(False, source="-",
                        doc="Follow with a cache flush, modelled as one more 512-byte "
                            "sequential write access [assumption].")


ServerStep = (CpuWork | Syscalls | PageFaults | ContextSwitches | TlbMisses | Timers | Receive
              | Send | DiskRead | DiskWrite)
_EVENT_STEPS = {"syscall": SYSCALL, "page_fault": PAGE_FAULT, "context_switch": CONTEXT_SWITCH,
                "tlb_miss": TLB_MISS, "timer": TIMER}


def _loop() -> Any:
    return param("closed", choices=("closed", "open"), source="assumption (load generators "
                 "such as memtier, wrk, sysbench run closed)",
                 doc="'closed': each connection has one request outstanding; 'open': Poisson "
                     "arrivals at rate_per_s.")


def _rate() -> Any:
    return param(10000.0, unit="1/s", lo=0.0, hi=1e9, lo_open=True, source="assumption",
                 doc="Arrival rate in open loop.")


def _connections(default: int, source: str) -> Any:
    return param(default, lo=1, hi=100000, source=source,
                 doc="Client connections, each with one request outstanding (closed loop).")


def _threads(default: int, source: str) -> Any:
    return param(default, lo=1, hi=4096, source=source,
                 doc="Application threads: compute steps of at most this many requests run "
                     "at once, whatever the vCPU count.")


@dataclass(frozen=True, slots=True, kw_only=True)
class Server(Params):
    """A server described step by step in the scenario file."""

    kind: str = param("server", choices=("server",), source="-", doc="Workload type tag.")
    name: str = param("server", source="-", doc="Name of the workload within its guest.")
    connections: int = _connections(1, "assumption")
    threads: int = _threads(1, "assumption")
    loop: str = _loop()
    rate_per_s: float = _rate()
    steps: tuple[ServerStep, ...] = field(default=(Receive(), CpuWork(), Send()))

    def check(self) -> None:
        """A server needs at least one step."""
        if not self.steps:
            raise ConfigError("steps", "a server needs at least one step; kinds: "
                                       + ", ".join(_STEP_KINDS))

    def variants(self) -> tuple[tuple[float, tuple[ServerStep, ...]], ...]:
        """The request types: ``(probability, steps)`` pairs summing to 1."""
        return ((1.0, self.steps),)


_STEP_KINDS = ("cpu", "syscall", "page_fault", "context_switch", "tlb_miss", "timer", "receive",
               "send", "disk_read", "disk_write")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValueCache(Params):
    """A memcached/redis-like in-memory cache: GETs and SETs over persistent connections.

    One simulated request is one batch of ``pipeline`` operations (the client writes them
    back to back; the server reads them with one ``recv``, answers with one ``send``), all
    GETs with probability ``get_fraction``, else all SETs. Per batch: one ``epoll_wait``; per
    operation: parsing and the hash-table work (``get_us`` or ``set_us``) and
    ``tlb_misses_per_op`` page walks.
    """

    kind: str = param("kv", choices=("kv",), source="-", doc="Workload type tag.")
    name: str = param("kv", source="-", doc="Name of the workload within its guest.")
    get_fraction: float = param(0.9, lo=0.0, hi=1.0,
                                source="assumption (memtier_benchmark --ratio 1:10 SET:GET)",
                                doc="Probability that a batch is GETs rather than SETs.")
    key_bytes: int = param(32, unit="bytes", lo=1, hi=250,
                           source="assumption (memtier key-prefix + number; memcached limit 250)",
                           doc="Key size.")
    value_bytes: int = param(100, unit="bytes", lo=1, hi=1 << 20, source="assumption",
                             doc="Value size.")
    connections: int = _connections(16, "assumption")
    pipeline: int = param(1, lo=1, hi=10000, source="memtier --pipeline (default 1)",
                          doc="Operations per batch.")
    threads: int = _threads(1, "redis: one event-loop thread serves every connection "
                               "(src/ae.c); memcached -t sets worker threads")
    get_us: float = param(1.0, unit="µs", lo=0.0, hi=1e6,
                          source="assumption (protocol parse + hash lookup + reply build: a "
                                 "few thousand instructions)",
                          doc="User-space CPU per GET.")
    set_us: float = param(1.5, unit="µs", lo=0.0, hi=1e6,
                          source="assumption (as GET plus allocation and copy of the value)",
                          doc="User-space CPU per SET.")
    tlb_misses_per_op: float = param(2.0, lo=0.0, hi=1e6,
                                     source="assumption (hash bucket + item in a table far "
                                            "larger than the TLB's reach)",
                                     doc="Page walks per operation.")
    loop: str = _loop()
    rate_per_s: float = _rate()

    def variants(self) -> tuple[tuple[float, tuple[ServerStep, ...]], ...]:
        """A GET batch and a SET batch, with their probabilities."""
        p = self.pipeline
        # memcached text protocol: "get <key>\r\n", "VALUE <key> 0 <n>\r\n<data>\r\nEND\r\n",
        # "set <key> 0 0 <n>\r\n<data>\r\n", "STORED\r\n".
        get_req, get_resp = self.key_bytes + 6, self.value_bytes + self.key_bytes + 25
        set_req, set_resp = self.key_bytes + self.value_bytes + 20, 8
        out = []
        for prob, req, resp, us in ((self.get_fraction, get_req, get_resp, self.get_us),
                                    (1.0 - self.get_fraction, set_req, set_resp, self.set_us)):
            if prob > 0.0:
                out.append((prob, (Receive(bytes=p * req),
                                   Syscalls(count=1.0, label="epoll_wait"),
                                   CpuWork(us=p * us, label="parse + hash table"),
                                   TlbMisses(count=p * self.tlb_misses_per_op),
                                   Send(bytes=p * resp))))
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebServer(Params):
    """An nginx-like static web server.

    Per request: (a new connection: the handshake packet, ``accept4`` and ``close``), one
    ``epoll_wait``, the request read by the path's ``recv``, ``open``/``fstat``/``close`` of
    the file (nginx without ``open_file_cache``), the header ``writev``, the access-log
    ``write``, the body (from disk first if ``source = "disk"``) by the path's ``send``
    (``sendfile``), and ``cpu_us`` of parsing and header generation.
    """

    kind: str = param("web", choices=("web",), source="-", doc="Workload type tag.")
    name: str = param("web", source="-", doc="Name of the workload within its guest.")
    request_bytes: int = param(200, unit="bytes", lo=1, hi=1 << 20,
                               source="assumption (GET line + a few headers, as wrk sends)",
                               doc="HTTP request size.")
    response_kib: float = param(4.0, unit="KiB", lo=0.0, hi=1 << 20, lo_open=True,
                                source="assumption", doc="Response body size.")
    header_bytes: int = param(240, unit="bytes", lo=0, hi=1 << 20,
                              source="assumption (nginx status line + default headers)",
                              doc="Response header size.")
    source: str = param("page_cache", choices=("page_cache", "disk"), source="-",
                        doc="Where the body comes from: the page cache, or a random disk "
                            "read first.")
    keep_alive: bool = param(True, source="wrk: HTTP/1.1 keep-alive",
                             doc="Reuse the connection; false: a new connection per request.")
    connections: int = _connections(16, "assumption")
    threads: int = _threads(1, "nginx worker_processes 1 (default nginx.conf)")
    cpu_us: float = param(10.0, unit="µs", lo=0.0, hi=1e6,
                          source="assumption (HTTP parse, header generation, log formatting)",
                          doc="User-space CPU per request.")
    loop: str = _loop()
    rate_per_s: float = _rate()

    def variants(self) -> tuple[tuple[float, tuple[ServerStep, ...]], ...]:
        """One request type."""
        body = max(1, round(self.response_kib * 1024))
        steps: list[ServerStep] = []
        if not self.keep_alive:
            # The client's SYN/ACK reaches the stack like a small message.
            steps.append(Receive(bytes=1))
            steps.append(Syscalls(count=2.0, label="accept4 + close"))
        steps += [Receive(bytes=self.request_bytes),
                  Syscalls(count=5.0, label="epoll_wait, open, fstat, close, log write"),
                  CpuWork(us=self.cpu_us, label="HTTP parse + headers")]
        if self.source == "disk":
            steps.append(DiskRead(bytes=4096 * math.ceil(body / 4096)))
        steps += [Syscalls(count=1.0, label="writev (headers)"),
                  Send(bytes=self.header_bytes + body)]
        return ((1.0, tuple(steps)),)


@dataclass(frozen=True, slots=True, kw_only=True)
class OltpDatabase(Params):
    """An InnoDB-like OLTP database: transactions of ``queries`` round trips and a commit.

    Per query: the client's statement, one ``poll``, ``cpu_per_query_us`` of work,
    ``pages_per_query`` buffer-pool page accesses each missing with ``1 - hit_ratio`` (a
    random read of ``page_bytes``), ``tlb_misses_per_query`` page walks, and the result set.
    The commit: its statement, a sequential log write of ``log_bytes`` and a flush
    (``innodb_flush_log_at_trx_commit = 1``), and the OK.
    """

    kind: str = param("oltp", choices=("oltp",), source="-", doc="Workload type tag.")
    name: str = param("oltp", source="-", doc="Name of the workload within its guest.")
    queries: int = param(10, lo=1, hi=10000, source="sysbench oltp_read_only: 10 point selects",
                         doc="Queries per transaction (each a round trip with the client).")
    query_bytes: int = param(150, unit="bytes", lo=1, hi=1 << 20, source="assumption",
                             doc="Statement size on the wire.")
    reply_bytes: int = param(300, unit="bytes", lo=1, hi=1 << 30, source="assumption",
                             doc="Result set size.")
    cpu_per_query_us: float = param(20.0, unit="µs", lo=0.0, hi=1e7,
                                    source="assumption (parse, optimize, B-tree lookup)",
                                    doc="User-space CPU per query.")
    pages_per_query: float = param(1.0, lo=0.0, hi=1e4, source="assumption (a point select "
                                   "touches one leaf page; upper levels stay cached)",
                                   doc="Buffer-pool page accesses that may miss, per query.")
    hit_ratio: float = param(0.99, lo=0.0, hi=1.0, source="assumption",
                             doc="Buffer-pool hit ratio.")
    page_bytes: int = param(16384, unit="bytes", lo=512, hi=1 << 20,
                            source="MySQL manual: innodb_page_size default 16 KiB",
                            doc="Size of one page read on a miss.")
    tlb_misses_per_query: float = param(4.0, lo=0.0, hi=1e6,
                                        source="assumption (one per B-tree level touched)",
                                        doc="Page walks per query.")
    log_bytes: int = param(2048, unit="bytes", lo=1, hi=1 << 30, source="assumption",
                           doc="Redo log written at commit.")
    connections: int = _connections(16, "assumption")
    threads: int = _threads(16, "MySQL thread_handling=one-thread-per-connection (default)")
    loop: str = _loop()
    rate_per_s: float = _rate()

    def variants(self) -> tuple[tuple[float, tuple[ServerStep, ...]], ...]:
        """One transaction type."""
        query: list[ServerStep] = [
            Receive(bytes=self.query_bytes), Syscalls(count=1.0, label="poll"),
            CpuWork(us=self.cpu_per_query_us, label="query execution"),
            TlbMisses(count=self.tlb_misses_per_query)]
        whole, part = divmod(self.pages_per_query, 1.0)
        miss = 1.0 - self.hit_ratio
        if miss > 0.0:
            query += [DiskRead(bytes=self.page_bytes, probability=miss)] * int(whole)
            if part > 0.0:
                query.append(DiskRead(bytes=self.page_bytes, probability=miss * part))
        query.append(Send(bytes=self.reply_bytes))
        commit = [Receive(bytes=20), Syscalls(count=1.0, label="poll"),
                  DiskWrite(bytes=self.log_bytes, sequential=True, flush=True), Send(bytes=11)]
        return ((1.0, tuple(query * self.queries + commit)),)


SERVER_KINDS = ("server", "kv", "web", "oltp")
#: Parameter tables of this module with the name they have in a scenario file (``virtlab
#: params`` and docs/parameters.md list them).
SERVER_TABLES: list[tuple[str, type[Params]]] = [
    *((f'[[guests.workloads]] kind = "{cls().kind}"', cls)
      for cls in (Server, KeyValueCache, WebServer, OltpDatabase)),
    *((f'[[guests.workloads.steps]] kind = "{cls().kind}"', cls)
      for cls in (CpuWork, Syscalls, PageFaults, ContextSwitches, TlbMisses, Timers, Receive,
                  Send, DiskRead, DiskWrite)),
]

# Plans -----------------------------------------------------------------------------------------
#: Operation codes of a compiled plan.
OP_CPU, OP_RECV, OP_SEND, OP_DISK = range(4)
#: Latency phase (virtlab.records.PHASES) of each CPU category of a compute block; a
#: virtualization surcharge (category EXIT) is the ``virt_compute`` phase, not the I/O path's
#: ``exits``.
_PHASE_OF = {GUEST: PHASES.index("guest"), HOST: PHASES.index("host_kernel"),
             EXIT: PHASES.index("virt_compute")}


def compile_plan(steps: tuple[ServerStep, ...], costs: ComputeCosts, kernel_category: int
                 ) -> tuple[tuple[Any, ...], ...]:
    """Turn steps into the operations the runner executes, priced for one approach.

    Consecutive compute steps become one ``(OP_CPU, cpu_steps, exits, cpu_us, parts)`` block
    (``exits`` may be fractional: an average; the runner carries the remainder over);
    ``cpu_steps`` holds, per compute step, its native part (user work as ``guest``, kernel
    events in ``kernel_category``) and, when non-zero, its virtualization surcharge as
    ``exit``; ``parts`` splits it into latency phases (user work and guest-kernel events:
    ``guest``, host-kernel events: ``host_kernel``, surcharges: ``virt_compute``) for paths
    that account phases. I/O steps become ``(OP_RECV, bytes)``, ``(OP_SEND, bytes)`` and
    ``(OP_DISK, bytes, write, sequential, probability, flush)``. Invariant: a block's
    ``cpu_us`` is the sum of its steps' durations.
    """
    ops: list[tuple[Any, ...]] = []
    block: list[tuple[int, float, str]] = []
    exits = 0.0

    def close_block() -> None:
        nonlocal block, exits
        if block:
            parts = tuple((_PHASE_OF[s[0]], s[1]) for s in block)
            ops.append((OP_CPU, tuple(block), exits, math.fsum(s[1] for s in block), parts))
        block, exits = [], 0.0

    for step in steps:
        kind = step.kind
        if isinstance(step, CpuWork):
            if step.us > 0.0:
                block.append((GUEST, step.us, f"app: {step.label}"))
        elif kind in _EVENT_STEPS:
            event = _EVENT_STEPS[kind]
            count = step.count  # type: ignore[union-attr]
            if count <= 0.0:
                continue
            name = getattr(step, "label", EVENTS[event])
            category = GUEST if event == TLB_MISS else kernel_category
            block.append((category, count * costs.native_us[event], f"app: {name}"))
            if costs.extra_us[event] > 0.0:
                block.append((EXIT, count * costs.extra_us[event],
                              f"virt: {name} ({costs.why[event] or costs.paging})"))
                exits += count * costs.extra_exits[event]
        else:
            close_block()
            if isinstance(step, Receive):
                ops.append((OP_RECV, step.bytes))
            elif isinstance(step, Send):
                ops.append((OP_SEND, step.bytes))
            elif isinstance(step, DiskRead):
                if step.probability > 0.0:
                    ops.append((OP_DISK, step.bytes, False, step.sequential, step.probability,
                                False))
            elif isinstance(step, DiskWrite):
                if step.probability > 0.0:
                    ops.append((OP_DISK, step.bytes, True, step.sequential, step.probability,
                                step.flush))
    close_block()
    return tuple(ops)
