"""A kernel's own stack and drivers over a device it drives itself: the native data path.

Natively the host kernel runs this flow for the application; with device assignment
(:mod:`virtlab.paths.passthrough`) the guest kernel runs the same flow on its vCPUs against the
real hardware. :class:`KernelStack` holds it once. A path gives it who runs it (the
application's contexts and the context of the NAPI polls), the CPU category, what its steps are
called, and how a device interrupt is taken (the NAPI instances' ``on_wake``): that last part is
where native and passthrough differ.

Request flow (network receive): the device interrupts if the NAPI instance is asleep -> the
poll runs TCP/IP per segment -> the application, blocked in ``recv``, is woken -> ``recv``
copies the data. Send: ``send`` syscall + copy + TCP/IP -> NIC link -> peer; the transmit
completion is reaped by the same NAPI instance. Block I/O: syscall + block layer (blk-mq: the
submitting CPU's hardware queue) -> device -> completion interrupt -> block-layer completion ->
the application is woken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext, Step
from virtlab.drain import DrainLoop
from virtlab.host import BLK_DONE, RX, Host
from virtlab.records import Request

__all__ = ["KernelStack", "StackIO", "StackLabels"]

#: What a NAPI instance runs when an interrupt wakes it: a process generator, or an empty
#: tuple when the interrupt costs nothing (no generator is started for it).
IrqHandler = Callable[[Any], "ProcessGenerator | tuple[()]"]


class StackLabels(NamedTuple):
    """What each step block of the stack is called (CPU breakdowns and traces)."""

    wake: str
    recv: str
    send: str
    stack_tx: str
    stack_rx: str
    submit: str
    blk_done: str


class KernelStack:
    """The socket, TCP/IP and block-layer work of one kernel for one application.

    Components: ``app`` (the context that makes the application's syscalls and is woken),
    ``poll`` (the context the NAPI polls and block completions run in), the NAPI instances
    ``nic`` (received packets and transmit completions) and ``blk`` (disk completions), and the
    disk hardware queues ``blk_queues`` the application's CPUs submit on.

    Invariants: every step is charged to ``category``; a completion that finds its NAPI
    instance asleep wakes it with one interrupt (counted on the request), and completions
    arriving while it polls are taken without another; transmit completions are reaped within
    the poll at no modelled extra cost; a step block of zero total cost is not run (no
    generator is started for it), which the zero-cost reductions of the analytic tests rely on
    for speed but not for their results.

    Parameters
    ----------
    syscall_us, pkt_extra_us, req_extra_us:
        Cost of a syscall, extra cost per packet in each direction and extra cost per request
        (µs); the extras are the container's hooks (:class:`~virtlab.paths.native.NativePath`).
    blk_irq_free:
        The owner's block interrupt handler (``on_blk_irq``) costs nothing; with zero-cost
        completion steps too, completions are handled at once, without scheduling events.
    nic_queues:
        The NIC's receive queues beyond the first (``nic.queues - 1`` of them): each one's
        poll context and interrupt handler. A connection's received packets and its transmit
        completions go to the queue pair RSS picks for it (:meth:`rx_queue`; a combined
        channel, one interrupt and NAPI instance per pair, as most multi-queue NICs set up).

    """

    def __init__(self, host: Host, app: ExecContext, poll: ExecContext, category: int,
                 labels: StackLabels, *, nic_scope: str, blk_scope: str,
                 on_nic_irq: IrqHandler, on_blk_irq: IrqHandler, syscall_us: float,
                 pkt_extra_us: float = 0.0, req_extra_us: float = 0.0,
                 blk_irq_free: bool = False,
                 nic_queues: Sequence[tuple[ExecContext, IrqHandler]] = ()) -> None:
        self.host = host
        self.env = host.env
        self.app = app
        self.poll = poll
        self.category = category
        self.labels = labels
        hp = host.params
        self.nic = DrainLoop(host.env, nic_scope, partial(self._nic_batch, poll),
                             batch_limit=hp.napi_budget, on_wake=on_nic_irq, tracer=host.tracer)
        #: The NIC's receive queues (RSS): queue 0 is ``nic``; each further one has its own
        #: NAPI instance, polled in its own context with its own interrupt handler.
        self.nics = [self.nic, *(
            DrainLoop(host.env, f"{nic_scope}{q}", partial(self._nic_batch, context),
                      batch_limit=hp.napi_budget, on_wake=irq, tracer=host.tracer)
            for q, (context, irq) in enumerate(nic_queues, start=1))]
        self.blk = DrainLoop(host.env, blk_scope, self._blk_batch, batch_limit=hp.napi_budget,
                             on_wake=on_blk_irq, tracer=host.tracer)
        self.segment_bytes = host.nic_params.tso_bytes
        # blk-mq: each of the application's CPUs submits on its own hardware queue
        # (Host.claim_disk_queues); which CPU submits is not tracked, so the submissions take
        # the application's queues in turn.
        self.blk_queues = host.claim_disk_queues(app.capacity)
        self._next_blk_queue = 0
        self.syscall_us = syscall_us
        self.pkt_extra_us = pkt_extra_us
        self.req_extra_us = req_extra_us
        # Fixed step blocks, built once.
        self._submit_steps: tuple[Step, ...] = (
            (category, syscall_us + 0.5 * hp.blk_io_us + req_extra_us, labels.submit),)
        self._wake_steps: tuple[Step, ...] = ((category, hp.ctx_switch_us, labels.wake),)
        self._blk_done_steps: tuple[Step, ...] = (
            (category, 0.5 * hp.blk_io_us, labels.blk_done),)
        # A block completion whose interrupt and handling cost nothing is handled at once
        # (DrainLoop.handle_now): two SimPy events per I/O fewer in the zero-cost reductions.
        self._blk_instant = blk_irq_free and self._blk_done_steps[0][1] == 0.0

    def loops(self) -> list[DrainLoop]:
        """The NAPI instances (started by the path)."""
        return [*self.nics, self.blk]

    def rx_queue(self, req: Request) -> DrainLoop:
        """The receive queue RSS steers ``req``'s connection to.

        The NIC indexes its indirection table (128 entries, as most drivers size it) with the
        low bits of the flow hash; the default table maps entry i to queue i % queues
        (ethtool_rxfh_indir_default), so connections spread over the queues by their hashes
        and one connection always lands on the same queue.
        """
        nics = self.nics
        if len(nics) == 1:
            return nics[0]
        return nics[(req.flow_hash & 127) % len(nics)]

    def receive(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Device -> interrupt -> NAPI poll (stack) -> wake the application -> ``recv`` copy.

        ``nbytes == 0`` is a pure ACK: the stack takes it; no application is woken.
        """
        host = self.host
        done = self.env.event()
        if self.rx_queue(req).push((RX, req, nbytes, done)):
            req.interrupts += 1
        yield done
        if not nbytes:
            return
        category = self.category
        yield from host.cpu.run(self.app, req, (
            (category, host.params.ctx_switch_us, self.labels.wake),
            (category, self.syscall_us + host.copy_us(nbytes), self.labels.recv),
        ))

    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """``send`` syscall + copy + TCP/IP -> NIC link -> peer.

        ``nbytes == 0`` is a pure ACK the kernel sends by itself, without syscall or copy.
        """
        host = self.host
        category = self.category
        segments = host.segments(nbytes, self.segment_bytes)
        yield from host.cpu.run(self.app, req, (
            (category, self.syscall_us + host.copy_us(nbytes) if nbytes else 0.0,
             self.labels.send),
            (category, segments * (host.params.stack_pkt_us + self.pkt_extra_us)
             + self.req_extra_us, self.labels.stack_tx),
        ))
        yield from host.transmit(req, nbytes, self.rx_queue(req))

    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """Syscall + block layer -> device -> interrupt -> completion -> wake the application."""
        host = self.host
        cpu = host.cpu
        if self._submit_steps[0][1] > 0.0:
            yield from cpu.run(self.app, req, self._submit_steps)
        turn = self._next_blk_queue
        self._next_blk_queue = (turn + 1) % len(self.blk_queues)
        yield from host.disk.serve(req, nbytes, write, sequential, self.blk_queues[turn])
        if self._blk_instant:
            self.blk.handle_now((BLK_DONE, req, nbytes, None))
            req.interrupts += 1
        else:
            done = self.env.event()
            if self.blk.push((BLK_DONE, req, nbytes, done)):
                req.interrupts += 1
            yield done
        if self._wake_steps[0][1] > 0.0:
            yield from cpu.run(self.app, req, self._wake_steps)

    # NAPI polls --------------------------------------------------------------------------------
    def _nic_batch(self, poll: ExecContext, batch: list[Any]) -> ProcessGenerator:
        """The stack per received segment, in ``poll``; transmit completions cost nothing."""
        host = self.host
        category = self.category
        per_packet_us = host.params.stack_pkt_us + self.pkt_extra_us
        for kind, req, nbytes, done in batch:
            if kind == RX:
                segments = host.segments(nbytes, self.segment_bytes)
                yield from host.cpu.run(poll, req, (
                    (category, segments * per_packet_us + self.req_extra_us,
                     self.labels.stack_rx),))
                done.succeed()

    # Returns what the NAPI loop delegates to (``yield from``): the CPU work's generator, or an
    # empty tuple when the work costs nothing (the zero-cost reductions), so that no generator
    # is started for nothing.
    def _blk_batch(self, batch: list[Any]) -> ProcessGenerator | tuple[()]:
        if self._blk_done_steps[0][1] > 0.0:
            return self._complete_blk_batch(batch)
        for item in batch:
            item[3].succeed()
        return ()

    def _complete_blk_batch(self, batch: list[Any]) -> ProcessGenerator:
        cpu = self.host.cpu
        steps = self._blk_done_steps
        for _kind, req, _nbytes, done in batch:
            yield from cpu.run(self.poll, req, steps)
            done.succeed()


class StackIO:
    """The I/O path methods of a path whose whole data path is its ``stack``.

    Native and passthrough paths inherit these (passthrough ahead of
    :class:`~virtlab.paths.vm.VmPath`, whose host bridge it does not use); they differ only in
    the ``stack`` they build and the interrupt handlers they give it.
    """

    stack: KernelStack

    def start(self) -> None:
        """Start the NAPI consumers."""
        for loop in self.loops():
            loop.start()

    def loops(self) -> list[DrainLoop]:
        """The path's consumer processes: the stack's NAPI instances."""
        return self.stack.loops()

    def ring_stats(self) -> dict[str, tuple[int, int]]:
        """No bounded rings of the path's own (a real device's rings are the hardware's)."""
        return {}

    def receive(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Device -> interrupt -> NAPI poll (stack) -> wake the application -> ``recv`` copy."""
        return self.stack.receive(req, nbytes)

    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """``send`` syscall + copy + TCP/IP -> NIC link -> peer (``nbytes == 0``: a pure ACK)."""
        return self.stack.send(req, nbytes)

    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """Syscall + block layer -> device -> interrupt -> completion -> wake the application."""
        return self.stack.block_io(req, nbytes, write, sequential)
