"""blkfront/blkback: the Xen block split driver (S10, S11, S14).

See :mod:`virtlab.paths.xen` for event channels, grants and the driver domain.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from simpy.events import ProcessGenerator

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
from virtlab.records import BACKEND, GUEST, HOST, Request

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["XenBlk", "BLK_REQUESTS_PER_PAGE"]

#: blkif requests per ring page: 112-byte entries on a 4 KiB page (S11, derived).
BLK_REQUESTS_PER_PAGE = 32


class XenBlk(XenDevice):
    """blkfront/blkback: one ring of ``32 * 2**xen_blk_ring_page_order`` requests.

    A request carries up to ``xen_blk_max_segments`` 4 KiB segments; larger I/Os take several
    requests. Entries are ``(request, bytes, state, write, sequential, grant refs)`` with
    ``state = [requests left, done event]``.
    """

    def __init__(self, path: ParavirtualPath) -> None:
        super().__init__(path, "blk")
        # blkback submits from its one kernel thread per ring: one hardware queue.
        (self.disk_queue,) = self.host.claim_disk_queues(1)
        p = self.params
        size = BLK_REQUESTS_PER_PAGE << p.xen_blk_ring_page_order
        self.ring = XenSharedRing(size, start_index=p.start_index)
        self.monitor = self._monitor("ring", size)
        self.to_back = self._channel("to-backend")
        self.to_front = self._channel("to-frontend")
        self._completed: deque[Any] = deque()
        self.space_waiters = WaitList(self.env)
        self._persistent_free: list[int] = []
        self._persistently_mapped: set[int] = set()
        self.full_waits = 0

    def start(self) -> None:
        """Start blkback and blkfront's interrupt handler."""
        self.env.process(self._blkback())
        self.env.process(self._blkfront_irq())

    def _grant_segments(self, count: int) -> list[int]:
        refs = []
        for _ in range(count):
            if self.params.xen_persistent_grants and self._persistent_free:
                refs.append(self._persistent_free.pop())
            else:
                ref = self.grants.grant()
                assert ref is not None, "ring slots bound the grants in use"
                refs.append(ref)
        return refs

    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """blkfront: grant segments, write requests, push, notify; wait for the response."""
        host = self.host
        p = self.params
        path = self.path
        pages = max(1, math.ceil(nbytes / PAGE_BYTES))
        requests = math.ceil(pages / p.xen_blk_max_segments)
        persistent_copy = host.copy_us(nbytes) if (p.xen_persistent_grants and write) else 0.0
        yield from path.hold_vcpu()   # submission through the event-channel send
        yield from run_phased(host.cpu, path.vcpu_held, req, (
            self._block_layer_step(),
            (GUEST, p.ring_op_us * (requests + pages), "blkfront: grant segments + write "
                                                       "requests", PH_GUEST),
            (GUEST, persistent_copy, "blkfront: copy into persistent grants", PH_COPIES),
        ), PH_QUEUEING)
        done = self.env.event()
        state = [requests, done]
        scope = f"{self.scope}.ring"
        left_pages = pages
        left = nbytes
        for _ in range(requests):
            segs = min(left_pages, p.xen_blk_max_segments)
            size = min(left, segs * PAGE_BYTES)
            left_pages -= segs
            left -= size
            while self.ring.full():
                self.full_waits += 1
                notify = self.ring.push_requests_and_check_notify()
                yield from self._notify(notify, self.ring, scope, req, self.to_back,
                                        path.vcpu_held, to_backend=True)
                path.release_vcpu()
                yield self.space_waiters.wait()
                yield from path.hold_vcpu()
            self.ring.put_request((req, size, state, write, sequential,
                                   self._grant_segments(segs)))
        notify = self.ring.push_requests_and_check_notify()
        self.monitor.update(self.ring.backlog)
        if host.tracer.enabled:
            self._trace(scope, "push", req, f"{requests} request(s) {self.ring.indexes()}")
        yield from self._notify(notify, self.ring, scope, req, self.to_back, path.vcpu_held,
                                to_backend=True)
        path.release_vcpu()
        yield from self._wake_application(req, done)

    def _blkback(self) -> ProcessGenerator:
        host = self.host
        hp = host.params
        p = self.params
        ring = self.ring
        scope = f"{self.scope}.ring"
        while True:
            woke = yield from self._sleep(self.to_back)
            wake = self._backend_wake_steps(thread=True) if woke else []
            while True:
                did = False
                count = 0
                while ring.unconsumed_requests():
                    entry = ring.get_request()
                    req, _size, _state, _write, _seq, refs = entry
                    count += 1
                    new = refs
                    if p.xen_persistent_grants:
                        new = [r for r in refs if r not in self._persistently_mapped]
                        self._persistently_mapped.update(new)
                    if self.xen1:   # S71 3.3.6: Xen validates, pins and programs the DMA
                        steps: list[PhasedStep] = [
                            *wake, (BACKEND, p.backend_pkt_us, "xen: validate request",
                                    PH_BACKEND), *self._pin_steps("pin", len(refs)),
                            (HOST, 0.5 * hp.blk_io_us, "xen: disk driver submit", PH_HOST)]
                    else:
                        for ref in new:
                            self.grants.map(ref)
                        steps = [*wake, (BACKEND, p.backend_pkt_us, "blkback: request",
                                         PH_BACKEND)]
                        if new:
                            steps.extend(self._hypercall_steps("GNTTABOP_map", len(new), 0,
                                                               False))
                        steps.append((HOST, 0.5 * hp.blk_io_us, "driver domain: submit bio",
                                      PH_HOST))
                    gap = PH_WAKEUP if wake else PH_QUEUEING
                    wake = []
                    if host.tracer.enabled:
                        self._trace(scope, "consume", req, ring.indexes())
                    yield from run_phased(host.cpu, self.driver, req, steps, gap)
                    self.env.process(self._serve(entry))
                    did = True
                if count:
                    self.monitor.batch(count)
                done_now = yield from self._respond(scope)
                if did or done_now:
                    continue
                if self._completed:
                    continue
                if not ring.final_check_for_requests():
                    break
            if wake:
                yield from self.path.run_unaccounted(self.driver, wake)

    def _serve(self, entry: Any) -> ProcessGenerator:
        req, size, _state, write, sequential, _refs = entry
        yield from self._serve_disk(req, size, write, sequential)
        self._completed.append(entry)
        self.to_back[1].ring()   # the disk interrupt reaches blkback in the driver domain

    def _respond(self, scope: str) -> ProcessGenerator:
        """Unmap (unless persistent), write responses, push and notify once per batch."""
        host = self.host
        p = self.params
        ring = self.ring
        count = 0
        req = None
        while self._completed:
            entry = self._completed.popleft()
            req, _size, _state, _write, _seq, refs = entry
            if self.xen1:
                steps: list[PhasedStep] = [(HOST, 0.5 * host.params.blk_io_us,
                                            "xen: disk interrupt + completion", PH_HOST),
                                           (BACKEND, p.backend_pkt_us, "xen: response",
                                            PH_BACKEND), *self._pin_steps("unpin", len(refs))]
            else:
                steps = [(HOST, 0.5 * host.params.blk_io_us, "driver domain: bio completion",
                          PH_HOST),
                         (BACKEND, p.backend_pkt_us, "blkback: response", PH_BACKEND)]
            if not p.xen_persistent_grants and not self.xen1:
                for ref in refs:
                    self.grants.unmap(ref)
                steps.extend(self._hypercall_steps("GNTTABOP_unmap", len(refs), 0, True))
            yield from run_phased(host.cpu, self.driver, req, steps, PH_QUEUEING)
            ring.put_response(entry)
            count += 1
        if req is None:
            return False
        notify = ring.push_responses_and_check_notify()
        yield from self._notify(notify, ring, scope, req, self.to_front, self.driver,
                                to_backend=False)
        return True

    def _blkfront_irq(self) -> ProcessGenerator:
        """``blkif_interrupt``: consume responses, end grants, complete; final check."""
        host = self.host
        p = self.params
        path = self.path
        ring = self.ring
        while True:
            yield from self._sleep(self.to_front)
            upcall = self._upcall_steps("blkfront")
            yield from path.hold_vcpu()
            reaped = 0
            while True:
                while ring.unconsumed_responses():
                    req, size, state, write, _seq, refs = ring.get_response()
                    reaped += 1
                    if p.xen_persistent_grants:
                        self._persistent_free.extend(refs)
                    else:
                        for ref in refs:
                            self.grants.end_access(ref)
                    copy = host.copy_us(size) if (p.xen_persistent_grants and not write) else 0.0
                    steps = [*upcall,
                             (GUEST, 0.5 * host.params.blk_io_us + p.ring_op_us * len(refs),
                              "blkfront: completion (end grant access)", PH_INTERRUPT),
                             (GUEST, copy, "blkfront: copy out of persistent grants",
                              PH_COPIES)]
                    gap = PH_INTERRUPT if upcall else PH_QUEUEING
                    upcall = []
                    yield from run_phased(host.cpu, path.vcpu_held, req, steps, gap)
                    self._entry_done(state)
                    self.space_waiters.wake_all()
                if not ring.final_check_for_responses():
                    break
            self.monitor.update(ring.backlog)
            if reaped:
                self.monitor.batch(reaped)
            yield from path.end_guest_irq(upcall)

