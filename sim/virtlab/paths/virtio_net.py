"""virtio-net: Linux's driver (transmit queue, NAPI receive) and a vhost or QEMU worker.

See :mod:`virtlab.paths.virtio` for the rules both virtio devices follow, and
docs/paravirtual.md for the walk-through.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from simpy.events import Event, ProcessGenerator

from virtlab.errors import ConfigError
from virtlab.paths.pvcommon import (
    EXIT_MMIO,
    PAGE_BYTES,
    PH_BACKEND,
    PH_COPIES,
    PH_DEVICE,
    PH_EXITS,
    PH_GUEST,
    PH_HOST,
    PH_INTERRUPT,
    PH_QUEUEING,
    VNET_HDR_BYTES,
    Doorbell,
    PhasedStep,
    RingMonitor,
    count_exits,
    mark,
    run_phased,
)
from virtlab.paths.virtio import VirtioDevice
from virtlab.paths.virtqueue import SplitVirtqueue
from virtlab.records import BACKEND, EXIT, GUEST, HOST, Request

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["VirtioNet"]


class VirtioNet(VirtioDevice):
    """virtio-net: a transmit and a receive queue, Linux's driver and one backend worker.

    Packet tokens on the transmit ring are ``(request, bytes, handed)`` where ``handed`` (set on
    the last packet of a send) receives the time its last byte reaches the peer. Receive buffers
    are posted empty; the backend records which packet it wrote into each (``_rx_contents``).
    """

    def __init__(self, path: ParavirtualPath) -> None:
        super().__init__(path, "net")
        self.txq, self.tx_monitor = self._queue("txq")
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
        self.rxq, self.rx_monitor = self._queue("rxq")
        self.rx_irq = Doorbell(self.env, f"{self.scope}.rx-irq")
        self.tx_irq = Doorbell(self.env, f"{self.scope}.tx-irq")
        self.tap: deque[Any] = deque()
        # vhost's work items: handle_tx is queued by a transmit kick, handle_rx by the tap
        # socket or a receive-refill kick; the worker runs whichever is queued.
        self._tx_work = False
        self._rx_work = False
        self._rx_contents: dict[int, tuple[Any, int]] = {}
        self._next_buffer = 0
        self.tx_stopped = False
        self.tx_stops = 0
        self._tx_waiters: list[Event] = []

    def monitors(self) -> list[RingMonitor]:
        """Transmit and receive queue monitors."""
        return [self.tx_monitor, self.rx_monitor]

    def _queue_work(self, vq: SplitVirtqueue) -> None:
        if vq is self.txq:
            self._tx_work = True
        else:
            self._rx_work = True

    def counters(self) -> dict[str, int]:
        """Base counters plus transmit-queue stops."""
        return {**super().counters(), f"{self.scope}.tx_queue_stops": self.tx_stops}

    def start(self) -> None:
        """Post a full ring of receive buffers (driver probe) and start the processes."""
        self._post_rx_buffers()
        self.txq.disable_cb()   # transmit completions are reaped at the next transmit
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
        hp = host.params
        p = self.params
        path = self.path
        segment = path.segment_bytes
        packets = host.segments(nbytes, segment)
        while self.tx_stopped:
            yield from self._wait_tx_restart(req)
        # The send syscall runs from the stack to the kick on one vCPU without interruption.
        yield from path.hold_vcpu()
        reclaimed = self._reclaim_tx(req)
        yield from run_phased(host.cpu, path.vcpu_held, req, (
            (GUEST, hp.syscall_us + host.copy_us(nbytes) + packets * hp.stack_pkt_us,
             "guest: send syscall + copy + stack tx", PH_GUEST),
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
        arrive_us = yield handed
        mark(req, PH_QUEUEING, self.env.now)   # until the backend handed it to the wire
        yield self.env.timeout(arrive_us - self.env.now)
        mark(req, PH_DEVICE, self.env.now)     # serialization and the wire

    def _wait_tx_restart(self, req: Request) -> ProcessGenerator:
        event = self.env.event()
        self._tx_waiters.append(event)
        if self.host.tracer.enabled:
            self._trace(f"{self.scope}.txq", "queue-stopped", req,
                        f"fewer than {self.tx_stop_free} free: sender waits "
                        f"{self.txq.indexes()}")
        yield event

    def _guest_tx_irq_loop(self) -> ProcessGenerator:
        """Delayed transmit-completion interrupts (only while the queue is stopped)."""
        while True:
            wait = self.tx_irq.wait()
            if wait is not None:
                yield wait
            txq = self.txq
            yield from self.path.wait_for_vcpu_thread()
            steps, _exits = self.path.guest_irq_steps("virtio-net tx")
            yield from self.path.hold_vcpu()
            count = self._reclaim_tx(None)
            steps.append((GUEST, self.params.ring_op_us * count, "guest: reclaim tx chains",
                          PH_INTERRUPT))
            yield from run_phased(self.host.cpu, self.path.vcpu_held, self.path.nobody, steps,
                                  PH_QUEUEING, account=False)
            count += self._reclaim_tx(None)
            self.path.release_vcpu()
            if self.tx_stopped and txq.num_free >= self.tx_stop_free:
                self.tx_stopped = False
                txq.disable_cb()
                waiters, self._tx_waiters = self._tx_waiters, []
                for event in waiters:
                    event.succeed()
            elif self.tx_stopped and not txq.enable_cb_delayed():
                self.tx_irq.pending = True   # already past the point: poll again

    # Host -> guest -----------------------------------------------------------------------------
    def deliver(self, item: Any) -> None:
        """A packet arrives on the tap device; the backend's socket poll wakes the worker."""
        self.tap.append(item)
        self._rx_work = True
        self.poke()
        self.kick_bell.ring()

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
            wait = self.rx_irq.wait()
            if wait is not None:
                yield wait
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
            if irq_steps:   # a spurious interrupt: nothing was used
                yield from run_phased(host.cpu, path.vcpu_held, path.nobody, irq_steps,
                                      PH_QUEUEING, account=False)
            path.release_vcpu()

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

    # Backend -----------------------------------------------------------------------------------
    def _worker_loop(self) -> ProcessGenerator:
        """Vhost ``handle_tx`` / ``handle_rx`` (or QEMU's bottom half) on one worker thread."""
        while True:
            yield from self._sleep()
            # Each handler disables its queue's notifications while it works and runs the
            # final check (re-enable, look again) before it returns with nothing left; a
            # handler that used up its weight requeues itself instead of sleeping.
            while self._tx_work or self._rx_work:
                if self._tx_work:
                    self._tx_work = False
                    self._tx_work = yield from self._handle_tx()
                if self._rx_work:
                    self._rx_work = False
                    self._rx_work = yield from self._handle_rx()

    def _handle_tx(self) -> ProcessGenerator:
        host = self.host
        hp = host.params
        p = self.params
        txq = self.txq
        qemu = self.backend_name == "qemu"
        weight = p.qemu_tx_burst if qemu else p.vhost_pkt_weight
        byte_weight = 1 << 62 if qemu else p.vhost_byte_weight_bytes
        scope = f"{self.scope}.txq"
        packets = sent_bytes = pending = 0
        req = None
        busyloop = p.vhost_busyloop_us if not qemu else 0.0
        txq.disable_notify()
        while packets < weight and sent_bytes < byte_weight:
            chain = txq.pop()
            if chain is None:
                # Busy-poll with notifications still off (vhost busyloop_timeout), then the
                # final check: re-enable and look again, which closes the race with the guest.
                if busyloop > 0.0 and (yield from self._busy_poll(busyloop)):
                    if txq.has_avail():
                        continue
                if txq.enable_notify():
                    txq.disable_notify()   # a chain slipped in: go on
                    continue
                break
            req, nbytes, handed = txq.token_of(chain.head)
            packets += 1
            sent_bytes += nbytes
            event = ((scope, "pop", f"head={chain.head} {txq.indexes()}")
                     if host.tracer.enabled else None)
            steps: list[PhasedStep] = [
                (BACKEND, p.backend_pkt_us, f"{self.backend_name}: pop tx chain", PH_BACKEND),
                (BACKEND, host.copy_us(nbytes), f"{self.backend_name}: copy from guest",
                 PH_COPIES)]
            if qemu:
                steps.append((HOST, hp.syscall_us, "qemu: tap writev", PH_BACKEND))
            steps.append((HOST, host.segments(nbytes, self.path.segment_bytes)
                          * hp.bridge_pkt_us, "host: tap + bridge + NIC driver", PH_HOST))
            yield from self._run_backend(req, steps, event)
            txq.add_used(chain.head, 0)
            pending += 1
            arrive_us = host.nic.tx.offer(self.env.now, host.nic.wire_bytes(nbytes))
            if host.tracer.enabled:
                host.trace("nic.tx", "wire", req.id, f"{nbytes} B on the wire, at peer "
                                                     f"{arrive_us:.3f} µs")
            if handed is not None:
                handed.succeed(arrive_us)
            if pending >= p.vhost_signal_batch:
                yield from self._signal(txq, scope, req, self.tx_irq, account=False)
                self.tx_monitor.update(txq.outstanding)
                pending = 0
        if packets:
            self.tx_monitor.batch(packets)
        if pending and req is not None:
            yield from self._signal(txq, scope, req, self.tx_irq, account=False)
            self.tx_monitor.update(txq.outstanding)
        return packets >= weight or sent_bytes >= byte_weight

    def _handle_rx(self) -> ProcessGenerator:
        host = self.host
        p = self.params
        rxq = self.rxq
        tap = self.tap
        scope = f"{self.scope}.rxq"
        weight = p.qemu_tx_burst if self.backend_name == "qemu" else p.vhost_pkt_weight
        packets = pending = 0
        req = None
        rxq.disable_notify()
        while tap and packets < weight:
            item = tap[0]
            req = item[1]
            nbytes = item[2]
            needed = max(1, math.ceil((nbytes + VNET_HDR_BYTES) / p.rx_buffer_bytes))
            if ((rxq.avail_idx - rxq.last_avail_idx) & 0xFFFF) < needed:
                # Out of guest buffers: ask for a refill kick, then look again.
                if rxq.enable_notify() and ((rxq.avail_idx - rxq.last_avail_idx) & 0xFFFF
                                            >= needed):
                    rxq.disable_notify()
                    continue
                break
            tap.popleft()
            packets += 1
            heads = []
            for k in range(needed):
                chain = rxq.pop()
                assert chain is not None
                self._rx_contents[rxq.token_of(chain.head)] = (item, needed - 1 - k)
                heads.append(chain.head)
            event = ((scope, "pop", f"{needed} buffer(s) {rxq.indexes()}")
                     if host.tracer.enabled else None)
            steps: list[PhasedStep] = [
                (BACKEND, p.backend_pkt_us, f"{self.backend_name}: rx (pop buffers, push used)",
                 PH_BACKEND),
                (BACKEND, host.copy_us(nbytes), f"{self.backend_name}: copy into guest buffers",
                 PH_COPIES)]
            if self.backend_name == "qemu":
                steps.append((HOST, host.params.syscall_us, "qemu: tap read", PH_BACKEND))
            yield from self._run_backend(req, steps, event)
            for head in heads:   # written after the copy
                rxq.add_used(head, min(p.rx_buffer_bytes, nbytes + VNET_HDR_BYTES))
            pending += needed
            if host.tracer.enabled:
                self._trace(scope, "used", req, f"{needed} buffer(s) for {nbytes} B "
                                                f"{rxq.indexes()}")
            if pending >= p.vhost_signal_batch or not tap or self.backend_name == "qemu":
                # QEMU notifies per received packet; vhost per batch or when the queue drains.
                yield from self._signal(rxq, scope, req, self.rx_irq, account=True)
                self.rx_monitor.update(rxq.used_backlog)
                pending = 0
        if packets:
            self.rx_monitor.batch(packets)
        if pending and req is not None:
            yield from self._signal(rxq, scope, req, self.rx_irq, account=True)
            self.rx_monitor.update(rxq.used_backlog)
        return packets >= weight


