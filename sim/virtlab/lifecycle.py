"""The life of a request, top to bottom: it arrives, a path serves it, it is observed.

A :class:`WorkloadRunner` drives one workload (:mod:`virtlab.workload`) of one guest:

1. **arrive** (:meth:`WorkloadRunner._arrive`): a closed-loop client issues its next request
   as soon as the previous one is done, or the open-loop source draws the next Poisson gap;
   a :class:`~virtlab.records.Request` is created and counted in the system;
2. **serve** (``_transaction``, ``_stream_segment``, ``_block_io``, ``_cpu_chunk``,
   ``_server_request``): the
   workload's own steps (the peer, the application's work) around the path's ``receive``,
   ``send`` and ``block_io`` (:class:`~virtlab.paths.IOPath`), which charge CPU, exits and
   notifications to the request as they happen;
3. **finish** (:meth:`WorkloadRunner._finish`): the request leaves the system and its
   :class:`~virtlab.tally.Tally` observes it (and retires it: later charges still reach the
   tally); with ``keep_requests`` it is also kept for per-request records.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import simpy
from simpy.events import ProcessGenerator

from virtlab.compute import compute_costs
from virtlab.cpu import ExecContext, Semaphore
from virtlab.guestcalls import SyscallSurcharge
from virtlab.host import Host
from virtlab.paths import IOPath
from virtlab.paths.emulation.phases import charge
from virtlab.records import GUEST, Request
from virtlab.rng import Streams
from virtlab.servers import OP_CPU, OP_RECV, OP_SEND, compile_plan
from virtlab.tally import Tally
from virtlab.tcp import ConversationAcks
from virtlab.units import per_us_from_per_s
from virtlab.workload import (
    BlockIO,
    BulkStream,
    CpuHog,
    KeyValueCache,
    OltpDatabase,
    RequestResponse,
    Server,
    WebServer,
    Workload,
)

_SERVERS = (Server, KeyValueCache, WebServer, OltpDatabase)

__all__ = ["WorkloadRunner"]


class WorkloadRunner:
    """Generates the requests of one workload of one guest and records them.

    Invariant (conservation): ``arrived == tally.completed + len(in_flight)`` at every instant
    (and ``completed`` holds the completed requests themselves when ``keep_requests``).
    ``in_flight_area`` integrates the number in the system over time (for Little's law).
    """

    def __init__(self, env: simpy.Environment, host: Host, guest: str, app: ExecContext,
                 path: IOPath, workload: Workload, streams: Streams,
                 new_id: Callable[[], int], max_requests: int | None = None, *,
                 window_us: tuple[float, float] = (0.0, math.inf),
                 keep_requests: bool = False) -> None:
        self.env = env
        self.host = host
        self.guest = guest
        self.app = app
        # What virtualization costs the application's own CPU work, and its system calls on
        # the path (virtlab.guestcalls: the path itself when there is no surcharge). A
        # paravirtual guest on the Xen backend is a PV guest (its MMU is paravirtualized).
        backend = getattr(getattr(path, "params", None), "backend", None)
        self.costs = compute_costs(path.approach, host.params, host.hypervisor,
                                   xen_pv=path.approach == "paravirtual" and backend == "xen")
        self.syscall_surcharge = SyscallSurcharge(host.cpu, app, self.costs)
        self.path = self.syscall_surcharge.wrap(path)
        self.workload = workload
        self.scope = f"{guest}.{workload.name}"
        self._arrivals = streams.get(f"{self.scope}.arrivals")
        self._mix = streams.get(f"{self.scope}.mix")
        self._new_id = new_id
        self.max_requests = max_requests
        self.arrived = 0
        #: Streaming observations of every completed request (bounded memory).
        self.tally = Tally(*window_us)
        #: Completed requests themselves, only when asked for (records, traces).
        self.keep_requests = keep_requests
        self.completed: list[Request] = []
        self.in_flight: dict[int, Request] = {}
        self._area = 0.0
        self._last_us = 0.0
        self._seq_offset = 0
        # The generator that serves one request of this kind, chosen once: the runner's
        # processes delegate to it directly (one generator level less on every resume).
        self._serve: Callable[[Request], ProcessGenerator]
        #: A bulk stream's pure ACKs (None: not a stream, or ``acks = false``).
        self.acks: ConversationAcks | None = None
        if isinstance(workload, BulkStream):
            self._serve = self._stream_segment
            tso = host.nic_params.tso_bytes
            self.unit_bytes = min(max(workload.message_bytes, tso), workload.window_bytes)
            self.outstanding = max(1, workload.window_bytes // self.unit_bytes)
            # TCP: pure ACKs one way for the data the other (virtlab.tcp).
            self.acks = (ConversationAcks(env, host, path, self.scope, self.unit_bytes)
                         if workload.acks else None)
        elif isinstance(workload, BlockIO):
            self._serve = self._block_io
            self.unit_bytes = workload.block_bytes
            self.outstanding = workload.iodepth * workload.jobs
        elif isinstance(workload, CpuHog):
            self._serve = self._cpu_chunk
            self.unit_bytes = 0
            self.outstanding = workload.threads
        elif isinstance(workload, _SERVERS):
            self._init_server(workload)
        else:
            self._serve = self._transaction
            self.unit_bytes = workload.request_bytes + workload.response_bytes
            self.outstanding = workload.in_flight

    def _init_server(self, workload: Server | KeyValueCache | WebServer | OltpDatabase) -> None:
        """Price the server's steps once for this path (the plans), and its threads."""
        self._serve = self._server_request
        variants = workload.variants()
        self._plans = tuple(compile_plan(steps, self.costs, self.path.kernel_category)
                            for _, steps in variants)
        cumulative, total = [], 0.0
        for prob, _ in variants:
            total += prob
            cumulative.append(total)
        self._plan_cum = tuple(cumulative)
        first = self._plans[0]
        self.unit_bytes = sum(op[1] for op in first if op[0] in (OP_RECV, OP_SEND))
        self.outstanding = workload.connections
        #: The application's threads: a compute block needs one, then a vCPU, then a core.
        self.threads = Semaphore(self.env, f"{self.scope}.threads", workload.threads)
        #: CPU time run on the threads, and time the threads were held (running or waiting
        #: for a vCPU or core), over the whole run.
        self.thread_cpu_us = 0.0
        self.thread_held_us = 0.0
        self._peer_half_us = 0.5 * self.host.nic_params.peer_stack_us
        self._exit_carry = 0.0

    # Bookkeeping -------------------------------------------------------------------------------
    def in_flight_area(self, until_us: float) -> float:
        """Integral over [0, until_us] of the number of requests in the system."""
        return self._area + len(self.in_flight) * (until_us - self._last_us)

    def _may_issue(self) -> bool:
        return self.max_requests is None or self.arrived < self.max_requests

    def _arrive(self) -> Request:
        now = self.env.now
        # The area under N(t) is brought up to now before N changes (here and in _finish).
        self._area += len(self.in_flight) * (now - self._last_us)
        self._last_us = now
        req = Request(self._new_id(), self.guest, self.workload.name, self.path.approach,
                      self.workload.kind, self.unit_bytes, now)
        self.arrived += 1
        self.in_flight[req.id] = req
        if self.host.tracer.enabled:
            self.host.trace(self.scope, "arrive", req.id, f"{self.workload.kind}, "
                                                          f"{self.unit_bytes} B")
        return req

    def _finish(self, req: Request) -> None:
        now = req.done_us = self.env.now
        self._area += len(self.in_flight) * (now - self._last_us)
        self._last_us = now
        del self.in_flight[req.id]
        if self.keep_requests:
            self.completed.append(req)  # observed with all its charges when the run ends
        else:
            self.tally.add(req)
        if self.host.tracer.enabled:
            self.host.trace(self.scope, "done", req.id,
                            f"latency {req.done_us - req.arrival_us:.3f} µs")

    def close(self) -> None:
        """End of the run: let the tally observe the requests that were kept."""
        if self.keep_requests:
            for req in self.completed:
                self.tally.add(req, retire=False)

    # Processes ---------------------------------------------------------------------------------
    def flow_hash(self, connection: int) -> int:
        """The RSS hash of one of this workload's connections (stable across runs and hosts).

        A server's clients are connections of their own; a netperf-like request/response
        workload (its transactions in flight are a burst on one connection) and a bulk stream
        are one connection each.
        """
        if not isinstance(self.workload, _SERVERS):
            connection = 0
        return zlib.crc32(f"{self.scope}:{connection}".encode())

    def start(self) -> None:
        """Start the closed-loop clients or the open-loop arrival process."""
        if self.workload.loop == "closed":
            for client in range(self.outstanding):
                self.env.process(self._run_closed_client(self.flow_hash(client)))
        else:
            self.env.process(self._generate_arrivals())

    def _run_closed_client(self, flow_hash: int) -> ProcessGenerator:
        while self._may_issue():
            req = self._arrive()
            req.flow_hash = flow_hash
            yield from self._serve(req)
            self._finish(req)

    def _generate_arrivals(self) -> ProcessGenerator:
        assert not isinstance(self.workload, CpuHog)  # busy loops are always closed
        mean_gap_us = 1.0 / per_us_from_per_s(self.workload.rate_per_s)
        env = self.env
        draw_gap_us = self._arrivals.exponential
        serve = self._serve
        finish = self._finish
        # Open loop, a server's requests come on connections of their own; other workloads
        # keep one connection (a block workload has none: its hash is never read).
        per_request = isinstance(self.workload, _SERVERS)
        flow_hash = self.flow_hash(0)
        while self._may_issue():
            yield env.timeout(draw_gap_us(mean_gap_us))
            req = self._arrive()
            req.flow_hash = self.flow_hash(req.id) if per_request else flow_hash
            # Each arrival is served by its own process; the request is finished when that
            # process ends (its end event's callback, at the same simulated instant), which
            # spares every resume of the request one generator level.
            env.process(serve(req)).callbacks.append(
                lambda ended, req=req: finish(req) if ended.ok else None)

    def _peer_sends(self, nbytes: int, req_id: int) -> ProcessGenerator:
        nic = self.host.nic
        arrive_us = nic.rx.offer(self.env.now, nic.wire_bytes(nbytes))
        if self.host.tracer.enabled:
            self.host.trace("nic.rx", "wire", req_id, f"peer sends {nbytes} B, at "
                                                               f"host NIC {arrive_us:.3f} µs")
        yield self.env.timeout(arrive_us - self.env.now)

    def _transaction(self, req: Request) -> ProcessGenerator:
        workload = self.workload
        assert isinstance(workload, RequestResponse)
        peer_half_us = 0.5 * self.host.nic_params.peer_stack_us
        if peer_half_us > 0.0:
            if self.host.tracer.enabled:
                self.host.trace("peer", "stack", req.id, f"peer builds the request: "
                                                         f"{peer_half_us:.3f} µs")
            yield self.env.timeout(peer_half_us)
        yield from self._peer_sends(workload.request_bytes, req.id)
        yield from self.path.receive(req, workload.request_bytes)
        yield from self.host.cpu.run(self.app, req, (
            (GUEST, workload.server_work_us, "application: serve request"),))
        yield from self.path.send(req, workload.response_bytes)
        if peer_half_us > 0.0:
            if self.host.tracer.enabled:
                self.host.trace("peer", "stack", req.id, f"peer receives the response: "
                                                         f"{peer_half_us:.3f} µs")
            yield self.env.timeout(peer_half_us)

    def _stream_segment(self, req: Request) -> ProcessGenerator:
        workload = self.workload
        assert isinstance(workload, BulkStream)
        if workload.direction == "transmit":
            # One segment carries several application writes; the path charges one syscall,
            # the remaining writes are charged here in the kernel that serves them.
            extra_writes = max(0, -(-self.unit_bytes // workload.message_bytes) - 1)
            if extra_writes:
                yield from self.host.cpu.run(self.app, req, (
                    (self.path.kernel_category, extra_writes * self.host.params.syscall_us,
                     "application: further write syscalls"),))
                yield from self.syscall_surcharge.pay(req, extra_writes, "further writes")
            yield from self.path.send(req, self.unit_bytes)
            # The peer acknowledges the burst; the window slides when the sender's stack has
            # taken the ACKs through its path's receive machinery.
            if self.acks is not None:
                yield from self.acks.take_acks(req)
        else:
            yield from self._peer_sends(self.unit_bytes, req.id)
            yield from self.path.receive(req, self.unit_bytes)
            # TCP: the receiver acknowledges the burst (delayed ACK: one per two full-sized
            # segments, and a GRO'd burst is one; __tcp_ack_snd_check) with pure ACKs that
            # cost what any transmit costs on the path; the window slides when they arrive.
            if self.acks is not None:
                yield from self.acks.send_acks(req)
            extra_reads = max(0, -(-self.unit_bytes // workload.message_bytes) - 1)
            if extra_reads:
                yield from self.host.cpu.run(self.app, req, (
                    (self.path.kernel_category, extra_reads * self.host.params.syscall_us,
                     "application: further read syscalls"),))
                yield from self.syscall_surcharge.pay(req, extra_reads, "further reads")

    def _server_request(self, req: Request) -> ProcessGenerator:
        """Run one request's plan: compute blocks on a thread, messages, disk I/O."""
        plans = self._plans
        plan = plans[0]
        if len(plans) > 1:
            draw = self._mix.uniform()
            for candidate, upto in zip(plans, self._plan_cum, strict=True):
                plan = candidate
                if draw < upto:
                    break
        env = self.env
        run = self.host.cpu.run
        path = self.path
        threads = self.threads
        peer_half_us = self._peer_half_us
        for op in plan:
            code = op[0]
            if code == OP_CPU:
                wait = threads.acquire()
                if wait is not None:
                    yield wait
                held_from = env.now
                yield from run(self.app, req, op[1])
                threads.release()
                if req.phase_us is not None:  # the path splits latency into phases
                    charge(req, op[4], env.now)
                self.thread_held_us += env.now - held_from
                self.thread_cpu_us += op[3]
                if op[2]:
                    # Fractional counts (an average per request) carry their remainder over
                    # to the next request, so the mean number of exits is exact.
                    carry = self._exit_carry + op[2]
                    whole = int(carry)
                    req.exits += whole
                    self._exit_carry = carry - whole
            elif code == OP_RECV:
                if peer_half_us > 0.0:
                    yield env.timeout(peer_half_us)
                yield from self._peer_sends(op[1], req.id)
                yield from path.receive(req, op[1])
            elif code == OP_SEND:
                yield from path.send(req, op[1])
                if peer_half_us > 0.0:
                    yield env.timeout(peer_half_us)
            else:  # OP_DISK: (code, bytes, write, sequential, probability, flush)
                if op[4] < 1.0 and self._mix.uniform() >= op[4]:
                    continue
                yield from path.block_io(req, op[1], op[2], op[3])
                if op[5]:
                    yield from path.block_io(req, 512, True, True)

    def _cpu_chunk(self, req: Request) -> ProcessGenerator:
        workload = self.workload
        assert isinstance(workload, CpuHog)
        yield from self.host.cpu.compute(self.app, req, workload.chunk_us,
                                         "application: CPU-bound loop", GUEST)
        if workload.think_us > 0.0:
            yield self.env.timeout(workload.think_us)

    def _block_io(self, req: Request) -> ProcessGenerator:
        # Not a generator itself: it returns the path's, so the clients delegate to the path
        # directly (one generator level less on each of the I/O's resumes).
        workload = self.workload
        assert isinstance(workload, BlockIO)
        write = self._mix.uniform() >= workload.read_fraction
        sequential = workload.pattern == "sequential"
        return self.path.block_io(req, workload.block_bytes, write, sequential)
