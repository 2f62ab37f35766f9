"""netfront/netback: the Xen network split driver (S12, S13, S16).

See :mod:`virtlab.paths.xen` for event channels, grants and the driver domain.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from simpy.events import ProcessGenerator

from virtlab.errors import ConfigError
from virtlab.paths.pvcommon import (
    PAGE_BYTES,
    PH_BACKEND,
    PH_COPIES,
    PH_GUEST,
    PH_HOST,
    PH_INTERRUPT,
    PH_QUEUEING,
    PH_WAKEUP,
    PhasedStep,
    WaitList,
    run_phased,
)
from virtlab.paths.xen import XenDevice
from virtlab.paths.xenring import XenSharedRing
from virtlab.records import BACKEND, EXIT, GUEST, HOST, Request

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["XenNet"]

#: Packets ``xenvif_rx_action`` takes per call before its kthread loops and calls it again
#: (S16: Linux ``drivers/net/xen-netback/rx.c``, ``RX_BATCH_SIZE``).
NETBACK_RX_BATCH = 64


class XenNet(XenDevice):
    """netfront/netback: a transmit and a receive ring of ``xen_net_ring_slots`` each.

    Transmit ring entries are ``(token, gref)`` per slot; the packet's first slot carries
    ``token = (request, bytes, slots, handed)``. Receive requests carry one granted page each.
    """

    def __init__(self, path: ParavirtualPath) -> None:
        super().__init__(path, "net")
        p = self.params
        slots = p.xen_net_ring_slots
        largest = self._slots(path.segment_bytes)
        if slots < max(largest, p.tx_stop_free + 1):
            raise ConfigError("paravirtual.xen_net_ring_slots",
                              f"must exceed tx_stop_free ({p.tx_stop_free}) and hold the "
                              f"largest packet ({largest} slots), got {slots}")
        self.tx = XenSharedRing(slots, start_index=p.start_index)
        self.rx = XenSharedRing(slots, start_index=p.start_index)
        self.tx_monitor = self._monitor("tx", slots)
        self.rx_monitor = self._monitor("rx", slots)
        self.tx_to_back = self._channel("tx-to-backend")
        self.tx_to_front = self._channel("tx-to-frontend")
        self.rx_to_back = self._channel("rx-to-backend")
        self.rx_to_front = self._channel("rx-to-frontend")
        self.rx_pending: deque[Any] = deque()
        # The bridge wakes the receive thread from inside the driver domain (no event channel).
        self._rx_woken_locally = False
        self.tx_stopped = False
        self.tx_waiters = WaitList(self.env)
        self._rx_contents: dict[int, tuple[Any, int]] = {}

    def start(self) -> None:
        """Post receive pages, start netback's threads and netfront's handlers."""
        self._post_rx()
        self.rx.push_requests_and_check_notify()
        for process in (self._netback_tx(), self._netback_rx(), self._netfront_tx_done(),
                        self._netfront_rx()):
            self.env.process(process)

    def _post_rx(self) -> int:
        posted = 0
        while not self.rx.full():
            ref = self.grants.grant()
            if ref is None:
                break
            self.rx.put_request(ref)
            posted += 1
        return posted

    def _slots(self, nbytes: int) -> int:
        """Ring slots of one packet: one per page, plus an extra-info slot for GSO."""
        pages = max(1, math.ceil(nbytes / PAGE_BYTES))
        return pages + (1 if nbytes > self.host.nic_params.payload_per_frame_bytes else 0)

    # netfront transmit --------------------------------------------------------------------------
    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Grant pages, write requests, push and notify if ``req_event`` was crossed."""
        host = self.host
        p = self.params
        path = self.path
        packets = host.segments(nbytes, path.segment_bytes)
        while self.tx_stopped:
            yield from self._wait(req)
        sizes = [min(path.segment_bytes, nbytes - k * path.segment_bytes) for k in range(packets)]
        slots = sum(self._slots(s) for s in sizes)
        yield from path.hold_vcpu()   # from the stack to the event-channel send
        yield from run_phased(host.cpu, path.vcpu_held, req, (
            self._stack_tx_step(nbytes, packets),
            (GUEST, p.ring_op_us * slots, "netfront: grant pages + write requests", PH_GUEST),
        ), PH_QUEUEING)
        handed = self.env.event()
        scope = f"{self.scope}.tx"
        for k, size in enumerate(sizes):
            need = self._slots(size)
            while self.tx.free_requests() < max(need, p.tx_stop_free):
                self.tx_stopped = True
                notify = self.tx.push_requests_and_check_notify()
                yield from self._notify(notify, self.tx, scope, req, self.tx_to_back,
                                        path.vcpu_held, to_backend=True)
                path.release_vcpu()
                yield from self._wait(req)
                yield from path.hold_vcpu()
            token = (req, size, need, handed if k == packets - 1 else None)
            for s in range(need):
                ref = self.grants.grant()
                assert ref is not None, "ring slots bound the grants in use"
                self.tx.put_request((token if s == 0 else None, ref))
        notify = self.tx.push_requests_and_check_notify()
        self.tx_monitor.update(self.tx.backlog)
        yield from self._notify(notify, self.tx, scope, req, self.tx_to_back, path.vcpu_held,
                                to_backend=True)
        path.release_vcpu()
        yield from self._to_peer(req, handed)

    def _wait(self, req: Request) -> ProcessGenerator:
        event = self.tx_waiters.wait()
        if self.host.tracer.enabled:
            self._trace(f"{self.scope}.tx", "queue-stopped", req, self.tx.indexes())
        yield event

    def _netfront_tx_done(self) -> ProcessGenerator:
        """Transmit responses: revoke grants, advance ``rsp_cons``, final check."""
        path = self.path
        while True:
            yield from self._sleep(self.tx_to_front)
            count = 0
            while True:
                while self.tx.unconsumed_responses():
                    self.grants.end_access(self.tx.get_response())
                    count += 1
                if not self.tx.final_check_for_responses():
                    break
            self.tx_monitor.update(self.tx.backlog)
            steps = self._upcall_steps("netfront tx")
            steps.append((GUEST, self.params.ring_op_us * count,
                          "netfront: tx responses (end grant access)", PH_INTERRUPT))
            yield from path.hold_vcpu()
            yield from path.run_unaccounted(path.vcpu_held, steps)
            path.release_vcpu()
            if self.tx_stopped and self.tx.free_requests() >= self.params.tx_stop_free:
                self.tx_stopped = False
                self.tx_waiters.wake_all()

    # netback transmit ---------------------------------------------------------------------------
    def _netback_tx(self) -> ProcessGenerator:
        """Netback's transmit NAPI in the driver domain: consume, grant ops, bridge, respond."""
        tx = self.tx
        scope = f"{self.scope}.tx"
        budget = self.host.params.napi_budget
        while True:
            woke = yield from self._sleep(self.tx_to_back)
            wake = self._backend_wake_steps(thread=False) if woke else []
            while True:
                batch: list[Any] = []
                while len(batch) < budget and tx.unconsumed_requests():
                    token, ref = tx.get_request()
                    refs = [ref]
                    for _ in range(token[2] - 1):
                        refs.append(tx.get_request()[1])
                    batch.append((token, refs))
                if batch:
                    self.tx_monitor.batch(len(batch))
                    yield from self._netback_tx_batch(batch, wake, scope)
                    wake = []
                    continue
                if not tx.final_check_for_requests():
                    break
            if wake:   # woken for nothing (the work was taken in an earlier pass)
                yield from self.path.run_unaccounted(self.driver, wake)

    def _netback_tx_batch(self, batch: list[Any], wake: list[PhasedStep], scope: str
                          ) -> ProcessGenerator:
        host = self.host
        p = self.params
        tx = self.tx
        copy_mode = p.xen_grant_mode == "copy"
        last = len(batch) - 1
        if host.tracer.enabled:
            slots = sum(len(refs) for _token, refs in batch)
            self._trace(scope, "consume", batch[0][0][0],
                        f"{len(batch)} packet(s) in {slots} slot(s): {tx.indexes()}")
        for i, ((req, size, _slots, handed), refs) in enumerate(batch):
            if self.xen1:
                arrive_us = yield from self._xen1_tx_packet(req, size, refs,
                                                            wake if i == 0 else [])
                if handed is not None:
                    handed.succeed(arrive_us)
                for ref in refs:
                    tx.put_response(ref)
                continue
            if copy_mode:
                for ref in refs:
                    self.grants.copy(ref)
                ops, copied, mapped = len(refs), size, []
            else:
                # The header is copied into the skb; every page holding the rest (including
                # the rest of the first slot's page) is mapped as a fragment.
                self.grants.copy(refs[0])
                mapped = list(refs) if size > p.xen_tx_copy_bytes else []
                for ref in mapped:
                    self.grants.map(ref)
                ops, copied = 1 + len(mapped), min(size, p.xen_tx_copy_bytes)
            steps: list[PhasedStep] = [*wake] if i == 0 else []
            grant = self._hypercall_steps("GNTTABOP_copy/map", ops, copied, False)
            steps.extend(grant if i == 0 else grant[1:])
            steps.append((BACKEND, p.backend_pkt_us, "netback: build skb", PH_BACKEND))
            steps.append((HOST, host.segments(size, self.path.segment_bytes)
                          * host.params.bridge_pkt_us, "driver domain: bridge + NIC driver",
                          PH_HOST))
            if mapped:
                for ref in mapped:
                    self.grants.unmap(ref)
                unmap = self._hypercall_steps("GNTTABOP_unmap", len(mapped), 0, i == last)
                steps.extend(unmap if i == last else unmap[1:2])
            gap = PH_WAKEUP if (wake and i == 0) else PH_QUEUEING
            yield from run_phased(host.cpu, self.driver, req, steps, gap)
            arrive_us = host.nic.tx.offer(self.env.now, host.nic.wire_bytes(size))
            if handed is not None:
                handed.succeed(arrive_us)
            for ref in refs:
                tx.put_response(ref)
        notify = tx.push_responses_and_check_notify()
        self.tx_monitor.update(tx.backlog)
        yield from self._notify(notify, tx, scope, batch[-1][0][0], self.tx_to_front,
                                self.driver, to_backend=False, account=False)

    def _xen1_tx_packet(self, req: Request, size: int, refs: list[int],
                        wake: list[PhasedStep]) -> Generator[Any, Any, float]:
        """Xen 1.x transmits one packet itself (S71, 3.2 and 3.3.5).

        It copies the descriptor and header (to apply the filter rules), pins the payload
        pages, runs the virtual firewall-router and the NIC driver (scatter-gather DMA from
        the guest's pages), then unpins them. Returns when the packet reaches the peer.
        """
        host = self.host
        header = min(size, self.params.xen_tx_copy_bytes)
        steps: list[PhasedStep] = [*wake, *self._pin_steps("pin", len(refs), header),
                                   (BACKEND, self.params.backend_pkt_us,
                                    "xen: validate descriptor + VFR rules", PH_BACKEND),
                                   (HOST, host.segments(size, self.path.segment_bytes)
                                    * host.params.bridge_pkt_us, "xen: NIC driver", PH_HOST),
                                   *self._pin_steps("unpin", len(refs))]
        yield from run_phased(host.cpu, self.driver, req, steps, PH_QUEUEING)
        return host.nic.tx.offer(self.env.now, host.nic.wire_bytes(size))

    # Receive ------------------------------------------------------------------------------------
    def deliver(self, item: Any) -> None:
        """The bridge (in the driver domain) queues a packet for netback's receive thread."""
        self.rx_pending.append(item)
        self._rx_woken_locally = True
        self.rx_to_back[1].ring()

    def _netback_rx(self) -> ProcessGenerator:
        """Netback's receive kthread: needs posted pages, grant-copies into them, responds."""
        host = self.host
        p = self.params
        rx = self.rx
        scope = f"{self.scope}.rx"
        flip = p.xen_flips_rx
        rx_label = "xen: rx demultiplex (VFR)" if self.xen1 else "netback: rx request"
        while True:
            woke = yield from self._sleep(self.rx_to_back)
            if woke and self._rx_woken_locally and self.xen1:
                wake: list[PhasedStep] = []   # Xen demultiplexes in its interrupt handler
            elif woke and self._rx_woken_locally:
                self.backend_wakeups += 1
                wake = [(BACKEND, self.host.params.ctx_switch_us,
                                           "wake netback rx kthread", PH_WAKEUP)]
            else:
                wake = self._backend_wake_steps(thread=True) if woke else []
            self._rx_woken_locally = False
            ops_in_hypercall = 0
            packets = 0
            req = None
            while self.rx_pending:
                item = self.rx_pending[0]
                req, nbytes = item[1], item[2]
                need = self._slots(nbytes)
                if not rx.request_event_at(need):
                    break   # frontend must post pages; its push will cross req_event
                self.rx_pending.popleft()
                for s in range(need):
                    ref = rx.get_request()
                    if not flip:
                        self.grants.copy(ref)
                    self._rx_contents[ref] = (item, need - 1 - s)
                    rx.put_response(ref)
                hypercalls = 0
                for _ in range(need):
                    if ops_in_hypercall == 0:
                        hypercalls += 1
                    ops_in_hypercall = (ops_in_hypercall + 1) % p.xen_rx_copy_batch
                steps: list[PhasedStep] = [*wake, (BACKEND, p.backend_pkt_us, rx_label,
                                                   PH_BACKEND)]
                if flip:
                    steps.extend(self._flip_steps(need, hypercalls))
                else:
                    grant = self._hypercall_steps("GNTTABOP_copy", need, nbytes, False)
                    grant[0] = (EXIT, hypercalls * host.hypercall_us, grant[0][2], PH_COPIES)
                    steps.extend(grant)
                gap = PH_WAKEUP if wake else PH_QUEUEING
                wake = []
                if host.tracer.enabled:
                    self._trace(scope, "consume", req, f"{need} page(s), {nbytes} B: "
                                                       f"{rx.indexes()}")
                yield from run_phased(host.cpu, self.driver, req, steps, gap)
                packets += 1
                if packets == NETBACK_RX_BATCH:   # the kthread calls xenvif_rx_action again
                    self.rx_monitor.batch(packets)
                    packets = 0
                notify = rx.push_responses_and_check_notify()
                yield from self._notify(notify, rx, scope, req, self.rx_to_front, self.driver,
                                        to_backend=False)
                self.rx_monitor.update(rx.unconsumed_responses())
            if packets:
                self.rx_monitor.batch(packets)
            if wake:
                yield from self.path.run_unaccounted(self.driver, wake)

    def _netfront_rx(self) -> ProcessGenerator:
        """Netfront's NAPI: consume <= budget packets, refill pages, final check."""
        host = self.host
        hp = host.params
        p = self.params
        path = self.path
        rx = self.rx
        scope = f"{self.scope}.rx"
        budget = hp.napi_budget
        while True:
            yield from self._sleep(self.rx_to_front)
            upcall = self._upcall_steps("netfront rx")
            yield from path.hold_vcpu()   # the poll runs in softirq, not interleaved
            last_req = path.nobody
            while True:
                received = 0
                slots = 0
                while received < budget and rx.unconsumed_responses():
                    ref = rx.get_response()
                    self.grants.end_access(ref)
                    item, remaining = self._rx_contents.pop(ref)
                    slots += 1
                    if remaining:
                        continue
                    _kind, req, nbytes, done = item
                    last_req = req
                    steps = [*upcall, (GUEST, host.segments(nbytes, path.segment_bytes)
                                       * hp.stack_pkt_us + p.ring_op_us * slots,
                                       "netfront: rx (end access, copy header, stack rx)",
                                       PH_GUEST)]
                    gap = PH_INTERRUPT if upcall else PH_QUEUEING
                    upcall = []
                    slots = 0
                    yield from run_phased(host.cpu, path.vcpu_held, req, steps, gap)
                    done.succeed()
                    received += 1
                if received:
                    self.rx_monitor.batch(received)
                if rx.free_requests() >= p.rx_refill_fraction * rx.size:
                    posted = self._post_rx()
                    yield from run_phased(host.cpu, path.vcpu_held, last_req, (
                        (GUEST, p.ring_op_us * posted, "netfront: refill rx pages", PH_GUEST),),
                        PH_QUEUEING, account=False)
                    notify = rx.push_requests_and_check_notify()
                    yield from self._notify(notify, rx, scope, last_req, self.rx_to_back,
                                            path.vcpu_held, to_backend=True, account=False)
                self.rx_monitor.update(rx.unconsumed_responses())
                if received < budget and not rx.final_check_for_responses():
                    break
            yield from path.end_guest_irq(upcall)


