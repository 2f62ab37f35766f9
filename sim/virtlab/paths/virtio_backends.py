"""The host side of virtio-net: what the backend worker does with the rings.

One worker per device (vhost's kernel thread, or QEMU's I/O thread with ``backend = "qemu"``)
runs these handlers; its sleep, wake-up, busy polling and interrupts belong to the transport,
:class:`~virtlab.paths.virtio.VirtioDevice`. The guests' drivers on top of each backend are
:class:`~virtlab.paths.virtio_net.VirtioNet` and :class:`~virtlab.paths.virtio_blk.VirtioBlk`.

* virtio-net (vhost-net's ``handle_tx`` / ``handle_rx``, S7; QEMU's virtio-net, S6): a
  transmit kick queues ``handle_tx``, which pops chains, copies the packets out and hands them
  to the tap device and the NIC; a packet on the tap, or a receive-refill kick, queues
  ``handle_rx``, which copies the packet into as many posted buffers as it needs (mergeable
  buffers). Each handler keeps its queue's notifications off while it works, runs the final
  check before it returns, and gives way after its weight (``vhost_pkt_weight``,
  ``vhost_byte_weight_bytes``; QEMU: ``qemu_tx_burst``).
* virtio-blk's back-ends (a QEMU I/O thread with its AIO modes, vhost-user-blk) are in
  :mod:`virtlab.paths.virtio_blk_backend`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from simpy.events import ProcessGenerator

from virtlab.paths.pvcommon import (
    PH_BACKEND,
    PH_COPIES,
    PH_HOST,
    VNET_HDR_BYTES,
    Doorbell,
    PhasedStep,
)
from virtlab.paths.virtio import VirtioDevice
from virtlab.paths.virtqueue import SplitVirtqueue
from virtlab.records import BACKEND, HOST

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["VirtioNetBackend"]


class VirtioNetBackend(VirtioDevice):
    """virtio-net's transmit and receive queues and the backend's work on them.

    Work items: ``handle_tx`` is queued by a transmit kick, ``handle_rx`` by a packet on the
    tap device or a receive-refill kick; the worker runs whichever is queued. The backend
    records in ``_rx_contents`` which packet it wrote into each receive buffer (and how many
    of the packet's buffers follow), standing for the buffers' contents.
    """

    def __init__(self, path: ParavirtualPath) -> None:
        super().__init__(path, "net")
        self.txq, self.tx_monitor = self._queue("txq")
        self.rxq, self.rx_monitor = self._queue("rxq")
        self.rx_irq = Doorbell(self.env, f"{self.scope}.rx-irq")
        self.tx_irq = Doorbell(self.env, f"{self.scope}.tx-irq")
        self.tap: deque[Any] = deque()
        # vhost's work items: handle_tx is queued by a transmit kick, handle_rx by the tap
        # socket or a receive-refill kick; the worker runs whichever is queued.
        self._tx_work = False
        self._rx_work = False
        self._rx_contents: dict[int, tuple[Any, int]] = {}

    def _queue_work(self, vq: SplitVirtqueue) -> None:
        if vq is self.txq:
            self._tx_work = True
        else:
            self._rx_work = True

    def deliver(self, item: Any) -> None:
        """A packet arrives on the tap device; the backend's socket poll wakes the worker."""
        self.tap.append(item)
        self._rx_work = True
        self.poke()
        self.kick_bell.ring()

    def _worker_loop(self) -> ProcessGenerator:
        """Vhost ``handle_tx`` / ``handle_rx`` (or QEMU's bottom half) on one worker thread."""
        while True:
            yield from self._sleep()
            # Each handler disables its queue's notifications while it works and runs the
            # final check (re-enable, look again) before it returns with nothing left; a
            # handler that used up its weight requeues itself instead of sleeping.
            # A work item queued again while its handler runs (a kick during the handler's
            # last signal) stays queued, as vhost_poll_queue re-adds a running work item:
            # the handler's own "weight used up" result must not overwrite it.
            while self._tx_work or self._rx_work:
                if self._tx_work:
                    self._tx_work = False
                    again = yield from self._handle_tx()
                    self._tx_work = self._tx_work or again
                if self._rx_work:
                    self._rx_work = False
                    again = yield from self._handle_rx()
                    self._rx_work = self._rx_work or again

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
