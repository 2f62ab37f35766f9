"""blkfront/blkback: the Xen block split driver (S10, S11, S14, S140-S142).

See :mod:`virtlab.paths.xen` for event channels, grants and the driver domain. Linux's three
extensions of the protocol are settings:

* persistent grants (Linux 3.8): blkfront takes pages from a pool it keeps granted
  (:class:`~virtlab.paths.xenring.BlkfrontGrantPool`) and copies the data in (write) or out
  (read); blkback keeps up to ``xen_blk_max_persistent_grants`` of them mapped
  (:class:`~virtlab.paths.xenring.PersistentGrantTree`), so after warm-up no map or unmap
  hypercall and no TLB flush is left;
* indirect requests (Linux 3.11): a request of more than ``xen_blk_max_segments`` pages carries
  up to ``xen_blk_max_indirect_segments`` segments in indirect pages, one ring slot instead of
  several; blkback maps the indirect pages, reads them and unmaps them before mapping the
  segments (``xen_blkbk_parse_indirect``);
* multi-page rings (Linux 4.2): ``xen_blk_ring_page_order``.
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
from virtlab.paths.xenring import BlkfrontGrantPool, PersistentGrantTree, XenSharedRing
from virtlab.records import BACKEND, GUEST, HOST, Request

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["XenBlk", "BlkEntry", "BLK_REQUESTS_PER_PAGE", "SEGS_PER_INDIRECT_PAGE"]

#: blkif requests per ring page: 112-byte entries on a 4 KiB page (S11, derived).
BLK_REQUESTS_PER_PAGE = 32
#: Segment descriptors per indirect page: 4096 / 8-byte ``blkif_request_segment`` (S140,
#: SEGS_PER_INDIRECT_FRAME).
SEGS_PER_INDIRECT_PAGE = 512


class BlkEntry:
    """One blkif request on the ring: part of a block I/O, with the grants it uses.

    ``state = [entries left, done event]`` is shared by the entries of one I/O. ``refs`` are the
    segments' grant references, ``indirect_refs`` those of its indirect pages (empty for a
    direct request); ``transient`` are the segment references blkback mapped for this request
    only and unmaps when it completes.
    """

    __slots__ = ("req", "size", "state", "write", "sequential", "refs", "indirect_refs",
                 "transient")

    def __init__(self, req: Request, size: int, state: list[Any], write: bool,
                 sequential: bool, refs: list[int], indirect_refs: list[int]) -> None:
        self.req = req
        self.size = size
        self.state = state
        self.write = write
        self.sequential = sequential
        self.refs = refs
        self.indirect_refs = indirect_refs
        self.transient: list[int] = []


class XenBlk(XenDevice):
    """blkfront/blkback: one ring of ``32 * 2**xen_blk_ring_page_order`` requests.

    A block I/O is split into ring requests of at most ``xen_blk_max_indirect_segments`` 4 KiB
    segments (``xen_blk_max_segments`` without indirect requests), as blkfront sets the block
    queue's segment limit; a request of more than ``xen_blk_max_segments`` is indirect.
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
        self._completed: deque[BlkEntry] = deque()
        self.space_waiters = WaitList(self.env)
        self.persistent = bool(p.xen_persistent_grants)
        self.pool = BlkfrontGrantPool(self.grants)
        self.kept = PersistentGrantTree(p.xen_blk_max_persistent_grants)
        self.full_waits = 0
        self.indirect_requests = 0

    def start(self) -> None:
        """Start blkback and blkfront's interrupt handler."""
        self.env.process(self._blkback())
        self.env.process(self._blkfront_irq())

    def counters(self) -> dict[str, float]:
        """The device's counters plus indirect requests and persistent-grant reuse."""
        return {**super().counters(),
                f"{self.scope}.indirect_requests": self.indirect_requests,
                f"{self.scope}.persistent_grants_kept": len(self.kept),
                f"{self.scope}.persistent_grant_hits": self.kept.hits,
                f"{self.scope}.frontend_grants_reused": self.pool.reused}

    # blkfront -----------------------------------------------------------------------------------
    def _grant_pages(self, count: int) -> list[int]:
        """``get_grant``: references for ``count`` pages (pooled ones first if persistent)."""
        if self.persistent:
            return [self.pool.get() for _ in range(count)]
        refs = []
        for _ in range(count):
            ref = self.grants.grant()
            assert ref is not None, "ring slots bound the grants in use"
            refs.append(ref)
        return refs

    def _release_grants(self, refs: list[int]) -> None:
        """At completion: back to the pool (kept if still mapped) or revoked."""
        for ref in refs:
            if self.persistent:
                self.pool.put(ref)
            else:
                self.grants.end_access(ref)

    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """blkfront: grant segments, write requests, push, notify; wait for the response."""
        host = self.host
        p = self.params
        path = self.path
        pages = max(1, math.ceil(nbytes / PAGE_BYTES))
        per_request = p.xen_blk_max_indirect_segments or p.xen_blk_max_segments
        requests = math.ceil(pages / per_request)
        sizes = []
        left_pages, left = pages, nbytes
        for _ in range(requests):
            segs = min(left_pages, per_request)
            size = min(left, segs * PAGE_BYTES)
            indirect = (math.ceil(segs / SEGS_PER_INDIRECT_PAGE)
                        if segs > p.xen_blk_max_segments else 0)
            sizes.append((segs, size, indirect))
            left_pages -= segs
            left -= size
        indirect_pages = sum(ind for _segs, _size, ind in sizes)
        persistent_copy = host.copy_us(nbytes) if (self.persistent and write) else 0.0
        yield from path.hold_vcpu()   # submission through the event-channel send
        yield from run_phased(host.cpu, path.vcpu_held, req, (
            self._block_layer_step(),
            (GUEST, p.ring_op_us * (requests + pages + indirect_pages),
             "blkfront: grant segments (+ indirect pages) + write requests", PH_GUEST),
            (GUEST, persistent_copy, "blkfront: copy into persistent grants", PH_COPIES),
        ), PH_QUEUEING)
        done = self.env.event()
        state = [requests, done]
        scope = f"{self.scope}.ring"
        for segs, size, indirect in sizes:
            while self.ring.full():
                self.full_waits += 1
                notify = self.ring.push_requests_and_check_notify()
                yield from self._notify(notify, self.ring, scope, req, self.to_back,
                                        path.vcpu_held, to_backend=True)
                path.release_vcpu()
                yield self.space_waiters.wait()
                yield from path.hold_vcpu()
            if indirect:
                self.indirect_requests += 1
            # blkif_setup_rw_req_grant takes an indirect page's grant before its segments'.
            indirect_refs = self._grant_pages(indirect)
            self.ring.put_request(BlkEntry(req, size, state, write, sequential,
                                           self._grant_pages(segs), indirect_refs))
        notify = self.ring.push_requests_and_check_notify()
        self.monitor.update(self.ring.backlog)
        if host.tracer.enabled:
            self._trace(scope, "push", req, f"{requests} request(s) {self.ring.indexes()}")
        yield from self._notify(notify, self.ring, scope, req, self.to_back, path.vcpu_held,
                                to_backend=True)
        path.release_vcpu()
        yield from self._wake_application(req, done)

    # blkback ------------------------------------------------------------------------------------
    def _map(self, refs: list[int]) -> tuple[int, list[int]]:
        """``xen_blkbk_map``: map the references not kept mapped; keep what fits.

        Returns how many were mapped now and which of them are transient (to be unmapped after
        use).
        """
        mapped = 0
        transient = []
        for ref in refs:
            if self.persistent and self.kept.lookup(ref):
                continue
            self.grants.map(ref)
            mapped += 1
            if not (self.persistent and self.kept.keep(ref)):
                transient.append(ref)
        return mapped, transient

    def _unmap_steps(self, refs: list[int]) -> list[PhasedStep]:
        """``xen_blkbk_unmap`` of ``refs``: one batched hypercall and the TLB shootdown."""
        if not refs:
            return []
        for ref in refs:
            self.grants.unmap(ref)
        return self._hypercall_steps("GNTTABOP_unmap", len(refs), 0, True)

    def _request_steps(self, entry: BlkEntry, wake: list[PhasedStep]) -> list[PhasedStep]:
        """The work of blkback (or Xen 1.x) to take one request from the ring and submit it."""
        p = self.params
        hp = self.host.params
        if self.xen1:   # S71 3.3.6: Xen validates, pins and programs the DMA
            return [*wake, (BACKEND, p.backend_pkt_us, "xen: validate request", PH_BACKEND),
                    *self._pin_steps("pin", len(entry.refs)),
                    (HOST, 0.5 * hp.blk_io_us, "xen: disk driver submit", PH_HOST)]
        steps = [*wake, (BACKEND, p.backend_pkt_us, "blkback: request", PH_BACKEND)]
        if entry.indirect_refs:   # xen_blkbk_parse_indirect: map, read, unmap
            mapped, transient = self._map(entry.indirect_refs)
            if mapped:
                steps.extend(self._hypercall_steps("GNTTABOP_map (indirect pages)", mapped, 0,
                                                   False))
            steps.extend(self._unmap_steps(transient))
        mapped, entry.transient = self._map(entry.refs)
        if mapped:
            steps.extend(self._hypercall_steps("GNTTABOP_map", mapped, 0, False))
        steps.append((HOST, 0.5 * hp.blk_io_us, "driver domain: submit bio", PH_HOST))
        return steps

    def _blkback(self) -> ProcessGenerator:
        ring = self.ring
        scope = f"{self.scope}.ring"
        while True:
            woke = yield from self._sleep(self.to_back)
            # A frontend's event wakes the kthread; a disk interrupt alone completes the I/O in
            # the bio's completion context (end_block_io_op -> make_response), no kthread switch.
            wake = (self._backend_wake_steps(thread=bool(ring.unconsumed_requests()))
                    if woke else [])
            while True:
                did = False
                count = 0
                while ring.unconsumed_requests():
                    entry = ring.get_request()
                    count += 1
                    steps = self._request_steps(entry, wake)
                    gap = PH_WAKEUP if wake else PH_QUEUEING
                    wake = []
                    if self.host.tracer.enabled:
                        self._trace(scope, "consume", entry.req, ring.indexes())
                    yield from run_phased(self.host.cpu, self.driver, entry.req, steps, gap)
                    self.env.process(self._serve(entry))
                    did = True
                if count:
                    self.monitor.batch(count)
                done_now = yield from self._respond(scope, wake)
                if done_now:
                    wake = []
                if did or done_now:
                    continue
                if self._completed:
                    continue
                if not ring.final_check_for_requests():
                    break
            if wake:
                yield from self.path.run_unaccounted(self.driver, wake)

    def _serve(self, entry: BlkEntry) -> ProcessGenerator:
        yield from self._serve_disk(entry.req, entry.size, entry.write, entry.sequential)
        self._completed.append(entry)
        self.to_back[1].ring()   # the disk interrupt reaches blkback in the driver domain

    def _respond(self, scope: str, wake: list[PhasedStep]) -> ProcessGenerator:
        """Unmap the transient grants, write responses, push and notify once per batch.

        ``wake`` (the driver domain's wake-up by the disk interrupt, if no request took it) is
        charged to the first response.
        """
        host = self.host
        p = self.params
        ring = self.ring
        count = 0
        req = None
        while self._completed:
            entry = self._completed.popleft()
            req = entry.req
            if self.xen1:
                steps: list[PhasedStep] = [(HOST, 0.5 * host.params.blk_io_us,
                                            "xen: disk interrupt + completion", PH_HOST),
                                           (BACKEND, p.backend_pkt_us, "xen: response",
                                            PH_BACKEND), *self._pin_steps("unpin",
                                                                          len(entry.refs))]
            else:
                steps = [(HOST, 0.5 * host.params.blk_io_us, "driver domain: bio completion",
                          PH_HOST),
                         (BACKEND, p.backend_pkt_us, "blkback: response", PH_BACKEND),
                         *self._unmap_steps(entry.transient)]
                entry.transient = []
            gap = PH_WAKEUP if wake else PH_QUEUEING
            yield from run_phased(host.cpu, self.driver, req, [*wake, *steps], gap)
            wake = []
            ring.put_response(entry)
            count += 1
        if req is None:
            return False
        notify = ring.push_responses_and_check_notify()
        yield from self._notify(notify, ring, scope, req, self.to_front, self.driver,
                                to_backend=False)
        return True

    def _blkfront_irq(self) -> ProcessGenerator:
        """``blkif_interrupt``: consume responses, copy out, release grants, complete."""
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
                    entry: BlkEntry = ring.get_response()
                    reaped += 1
                    grants = len(entry.refs) + len(entry.indirect_refs)
                    self._release_grants(entry.refs)
                    self._release_grants(entry.indirect_refs)
                    copy = (host.copy_us(entry.size) if (self.persistent and not entry.write)
                            else 0.0)
                    steps = [*upcall,
                             (GUEST, 0.5 * host.params.blk_io_us + p.ring_op_us * grants,
                              "blkfront: completion (release grants)", PH_INTERRUPT),
                             (GUEST, copy, "blkfront: copy out of persistent grants",
                              PH_COPIES)]
                    gap = PH_INTERRUPT if upcall else PH_QUEUEING
                    upcall = []
                    yield from run_phased(host.cpu, path.vcpu_held, entry.req, steps, gap)
                    self._entry_done(entry.state)
                    self.space_waiters.wake_all()
                if not ring.final_check_for_responses():
                    break
            self.monitor.update(ring.backlog)
            if reaped:
                self.monitor.batch(reaped)
            yield from path.end_guest_irq(upcall)
