"""virtio-net's guest side: Linux's driver, with its transmit queue and NAPI receive.

The rules it follows, and the kick it sends, are the transport's (:mod:`virtlab.paths.virtio`);
the backend that serves its queues is :class:`~virtlab.paths.virtio_backends.VirtioNetBackend`.
docs/paravirtual.md has the walk-through.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from simpy.events import ProcessGenerator

from virtlab.errors import ConfigError
from virtlab.paths.pvcommon import (
    EXIT_MMIO,
    PAGE_BYTES,
    PH_EXITS,
    PH_GUEST,
    PH_INTERRUPT,
    PH_QUEUEING,
    VNET_HDR_BYTES,
    WaitList,
    count_exits,
    run_phased,
)
from virtlab.paths.virtio_backends import VirtioNetBackend
from virtlab.records import EXIT, GUEST, Request

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["VirtioNet"]


class VirtioNet(VirtioNetBackend):
    """virtio-net: Linux's driver on a transmit and a receive queue, over its backend.

    Packet tokens on the transmit ring are ``(request, bytes, handed)`` where ``handed`` (set on
    the last packet of a send) receives the time its last byte reaches the peer. Receive buffers
    are posted empty; the backend records which packet it wrote into each (``_rx_contents``).

    The driver is layered on its backend's class so that one object is the whole device pair
    the path holds as ``net``; the two halves meet through the queues (and what the backend
    wrote into their buffers), the kick and the interrupt lines.
    """

    def __init__(self, path: ParavirtualPath) -> None:
        super().__init__(path)
        p = self.params
        # The queue stops when fewer than this many descriptors are free; a small ring stops
        # when it is full. The next packet must still fit once the queue runs.
        self.tx_stop_free = min(p.tx_stop_free, p.ring_size)
        pages = math.ceil(path.segment_bytes / PAGE_BYTES)
        largest = self.txq.descriptors_needed(1 + pages)
        if largest > self.tx_stop_free:
            raise ConfigError("paravirtual.tx_stop_free",
                              f"a {path.segment_bytes}-byte packet takes {largest} descriptors "
                              f"without indirect descriptors; tx_stop_free and ring_size must "
                              f"be at least that, got {p.tx_stop_free} and {p.ring_size}")
        self._next_buffer = 0
        self.tx_stopped = False
        self.tx_stops = 0
        self.tx_waiters = WaitList(self.env)

    def counters(self) -> dict[str, int]:
        """Base counters plus transmit-queue stops."""
        return {**super().counters(), f"{self.scope}.tx_queue_stops": self.tx_stops}

    def start(self) -> None:
        """Post a full ring of receive buffers (driver probe) and start the processes."""
        self._post_rx_buffers()
        # Without napi_tx, transmit completions are reaped at the next transmit; with it the
        # first transmit re-enables callbacks (enable_cb_delayed in start_xmit).
        self.txq.disable_cb()
        self.env.process(self._worker_loop())
        self.env.process(self._guest_rx_loop())
        self.env.process(self._guest_tx_irq_loop())

    def _post_rx_buffers(self) -> int:
        posted = 0
        size = self.params.rx_buffer_bytes
        while self.rxq.num_free:
            self.rxq.add((), (size,), self._next_buffer)
            self._next_buffer += 1
            posted += 1
        return posted

    # Guest transmit ----------------------------------------------------------------------------
    def _reclaim_tx(self, req: Request | None) -> int:
        """``free_old_xmit_skbs``: reclaim used transmit chains; return how many."""
        count = 0
        while (got := self.txq.get_buf()) is not None:
            count += 1
            if req is not None and self.host.tracer.enabled:
                self._trace(f"{self.scope}.txq", "reclaim", req,
                            f"request #{got[0][0].id}'s chain {self.txq.indexes()}")
        if count:
            self.tx_monitor.update(self.txq.outstanding)
        return count

    def _stop_if_nearly_full(self) -> None:
        """Stop the queue below ``tx_stop_free`` free descriptors; ask for a delayed irq."""
        txq = self.txq
        if txq.num_free >= self.tx_stop_free:
            return
        self.tx_stopped = True
        self.tx_stops += 1
        if not txq.enable_cb_delayed():
            # Already past the 3/4 point: reclaim now and maybe go on.
            self._reclaim_tx(None)
            if txq.num_free >= self.tx_stop_free:
                self.tx_stopped = False
                txq.disable_cb()

    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Guest stack -> one chain per packet -> kick at the end of the burst -> backend."""
        host = self.host
        p = self.params
        path = self.path
        segment = path.segment_bytes
        packets = host.segments(nbytes, segment)
        while self.tx_stopped:
            yield from self._wait_tx_restart(req)
        # The send syscall runs from the stack to the kick on one vCPU without interruption.
        yield from path.hold_vcpu()
        reclaimed = self._reclaim_tx(req)
        if p.napi_tx:
            # start_xmit (S75): disable callbacks, free old chains, then, at the end of the
            # burst, re-enable them delayed; if used chains arrived meanwhile, free them too.
            while not self.txq.enable_cb_delayed():
                self.txq.disable_cb()
                reclaimed += self._reclaim_tx(req)
        yield from run_phased(host.cpu, path.vcpu_held, req, (
            self._stack_tx_step(nbytes, packets),
            (GUEST, p.ring_op_us * (packets + reclaimed), "guest: virtio-net xmit (reclaim + "
                                                         "add chains)", PH_GUEST),
        ), PH_QUEUEING)
        handed = self.env.event()
        left = nbytes
        scope = f"{self.scope}.txq"
        for k in range(packets):
            while self.tx_stopped:
                # xmit_more is ignored when the queue stops: kick what is queued, then wait.
                yield from self._kick(self.txq, scope, req)
                path.release_vcpu()
                yield from self._wait_tx_restart(req)
                yield from path.hold_vcpu()
            size = min(segment, left)
            left -= size
            data = [min(PAGE_BYTES, size - off) for off in range(0, size, PAGE_BYTES)]
            token = (req, size, handed if k == packets - 1 else None)
            head = self.txq.add([VNET_HDR_BYTES, *data], (), token)
            assert head is not None, "the queue stops before it can run out of descriptors"
            self.tx_monitor.update(self.txq.outstanding)
            if host.tracer.enabled:
                self._trace(scope, "avail", req, f"chain head={head} ({1 + len(data)} elements, "
                                                 f"{size} B) {self.txq.indexes()}")
            self._stop_if_nearly_full()
        yield from self._kick(self.txq, scope, req)
        path.release_vcpu()
        yield from self._to_peer(req, handed)

    def _wait_tx_restart(self, req: Request) -> ProcessGenerator:
        event = self.tx_waiters.wait()
        if self.host.tracer.enabled:
            self._trace(f"{self.scope}.txq", "queue-stopped", req,
                        f"fewer than {self.tx_stop_free} free: sender waits "
                        f"{self.txq.indexes()}")
        yield event

    def _guest_tx_irq_loop(self) -> ProcessGenerator:
        """Raise transmit-completion interrupts.

        They come while the queue is stopped (delayed), and, with ``napi_tx``, after every
        kicked transmit (``virtnet_poll_tx``, which re-enables callbacks when its poll ends).
        """
        while True:
            yield from self.tx_irq.sleep()
            txq = self.txq
            yield from self.path.wait_for_vcpu_thread()
            steps, _exits = self.path.guest_irq_steps("virtio-net tx")
            yield from self.path.hold_vcpu()
            count = self._reclaim_tx(None)
            steps.append((GUEST, self.params.ring_op_us * count, "guest: reclaim tx chains",
                          PH_INTERRUPT))
            yield from self.path.run_unaccounted(self.path.vcpu_held, steps)
            count += self._reclaim_tx(None)
            self.path.release_vcpu()
            if self.tx_stopped and txq.num_free >= self.tx_stop_free:
                self.tx_stopped = False
                if self.params.napi_tx:
                    if not txq.enable_cb():   # virtqueue_napi_complete
                        self.tx_irq.pending = True
                else:
                    txq.disable_cb()
                self.tx_waiters.wake_all()
            elif self.tx_stopped and not txq.enable_cb_delayed():
                self.tx_irq.pending = True   # already past the point: poll again
            elif self.params.napi_tx and not txq.enable_cb():
                self.tx_irq.pending = True   # used chains arrived during the poll

    # Guest receive -----------------------------------------------------------------------------
    def _guest_rx_loop(self) -> ProcessGenerator:
        """NAPI: interrupt -> disable callbacks -> poll <= budget -> refill -> re-enable."""
        host = self.host
        hp = host.params
        p = self.params
        path = self.path
        rxq = self.rxq
        budget = hp.napi_budget
        scope = f"{self.scope}.rxq"
        while True:
            yield from self.rx_irq.sleep()
            rxq.disable_cb()
            yield from path.wait_for_vcpu_thread()
            irq_steps, irq_exits = path.guest_irq_steps("virtio-net rx")
            yield from path.hold_vcpu()   # the poll runs in softirq, not interleaved
            last_req = path.nobody
            while True:
                received = 0
                buffers = 0
                while received < budget:
                    got = rxq.get_buf()
                    if got is None:
                        break
                    item, remaining = self._rx_contents.pop(got[0])
                    buffers += 1
                    if remaining:
                        continue   # a mergeable packet's earlier buffers
                    _kind, req, nbytes, done = item
                    last_req = req
                    self.rx_monitor.update(rxq.used_backlog)
                    if host.tracer.enabled:
                        self._trace(scope, "reap", req, f"{buffers} buffer(s) {rxq.indexes()}")
                    steps = [*irq_steps, (GUEST, host.segments(nbytes, path.segment_bytes)
                                          * hp.stack_pkt_us + p.ring_op_us * buffers,
                                          "guest: virtio-net rx (reap + stack rx)", PH_GUEST)]
                    gap = PH_INTERRUPT if irq_steps else PH_QUEUEING
                    path.count_irq_exits(req, irq_exits)
                    irq_steps = []
                    irq_exits = 0
                    buffers = 0
                    yield from run_phased(host.cpu, path.vcpu_held, req, steps, gap)
                    done.succeed()
                    received += 1
                if received:
                    self.rx_monitor.batch(received)
                if rxq.num_free >= p.rx_refill_fraction * rxq.size:
                    yield from self._refill(last_req)
                if received < budget:
                    if rxq.enable_cb():
                        break
                    rxq.disable_cb()
            # Interrupt steps still unclaimed: a spurious interrupt, nothing was used.
            yield from path.end_guest_irq(irq_steps)

    def _refill(self, req: Request) -> ProcessGenerator:
        # Background driver work: charged to the last request's CPU, not to its latency.
        posted = self._post_rx_buffers()
        account = False
        yield from run_phased(self.host.cpu, self.path.vcpu_held, req, (
            (GUEST, self.params.ring_op_us * posted, "guest: refill rx buffers", PH_GUEST),),
            PH_QUEUEING, account=account)
        self.rx_monitor.update(self.rxq.used_backlog)
        self.poke()
        if self.host.tracer.enabled:
            self._trace(f"{self.scope}.rxq", "refill", req, f"{posted} buffers "
                                                            f"{self.rxq.indexes()}")
        kick = self.rxq.kick_prepare()
        if kick:
            # Only when the backend ran out of buffers and asked (avail_event / flag).
            self.kicks += 1
            count_exits(req, EXIT_MMIO, 1, self.host.exit_kernel_us)
            yield from run_phased(self.host.cpu, self.path.vcpu_held, req, (
                (EXIT, self.host.exit_kernel_us, "kick: rx refill", PH_EXITS),), PH_QUEUEING,
                account=account)
            self._rx_work = True
            self.kick_bell.ring()
