"""What Xen's split drivers share: event channels, grant hypercalls and the driver domain.

:class:`XenDevice` is the base of netfront/netback (:mod:`virtlab.paths.xen_net`) and
blkfront/blkback (:mod:`virtlab.paths.xen_blk`), over the ring, event-channel and grant-table
data structures of :mod:`virtlab.paths.xenring` (S10-S16). It charges the time of Xen's
mechanisms; the devices decide when to use them.

The backends run in a *driver domain* (``ParavirtualPath.driver_ctx``, ``driver_domain_vcpus``
vCPUs) that also owns the physical NIC. Notifications are event channels: the sender makes an
``EVTCHNOP_send`` hypercall; Xen delivers an upcall, scheduling the receiving domain's vCPU
first if it was blocked (``hypervisor.xen_domain_switch_us``). Whether to send is decided by
the ring's ``*_event`` hold-off (:class:`~virtlab.paths.xenring.XenSharedRing`); a consumer
going idle runs the final check.

Data moves through grants (5b(g)-(i)):

* transmit: netback grant-copies the first ``xen_tx_copy_bytes`` and grant-maps the rest
  (``xen_grant_mode = "map"``), later unmapping them, which flushes the TLB of every driver-domain
  vCPU; or grant-copies everything (``"copy"``);
* receive: netback grant-copies into pages the frontend posted, ``xen_rx_copy_batch`` operations
  per hypercall;
* block: blkback maps each segment and unmaps it after the I/O, or with persistent grants keeps
  up to ``xen_blk_max_persistent_grants`` pages mapped and the frontend copies data through
  them; an indirect request's indirect pages are mapped (unless kept) and unmapped before its
  segments are mapped (:mod:`virtlab.paths.xen_blk`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simpy.events import ProcessGenerator

from virtlab.paths.pvcommon import (
    PH_COPIES,
    PH_EXITS,
    PH_INTERRUPT,
    PH_QUEUEING,
    PH_WAKEUP,
    Doorbell,
    PhasedStep,
    run_phased,
)
from virtlab.paths.splitdriver import SplitDriver
from virtlab.paths.xenring import EventChannel, GrantTable, XenSharedRing
from virtlab.records import BACKEND, EXIT, Request

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["XenDevice"]


class XenDevice(SplitDriver):
    """What netfront/netback and blkfront/blkback share: event channels and wake-ups.

    A *channel* here is one direction of notification: an :class:`EventChannel` (the pending
    bit at the receiver) and the :class:`Doorbell` its handler sleeps on.
    """

    def __init__(self, path: ParavirtualPath, kind: str) -> None:
        super().__init__(path, f"xen-{kind}")
        assert path.driver_ctx is not None
        self.driver = path.driver_ctx
        self.grants = GrantTable()
        self.sends = self.suppressed = self.upcalls = 0
        self.backend_wakeups = 0
        #: Xen 1.x: the hypervisor is the backend; it pins pages instead of mapping grants.
        self.xen1 = path.xen1
        self.pins = self.unpins = self.flips = 0
        # Xen 1.x: the guest's vCPUs whose TLBs a flip flushes; 3.x: the driver domain's.
        self._flip_flush_vcpus = (path.vcpu.capacity if self.xen1
                                  else self.params.driver_domain_vcpus)

    def _channel(self, name: str) -> tuple[EventChannel, Doorbell]:
        return EventChannel(f"{self.scope}.{name}"), Doorbell(self.env, f"{self.scope}.{name}")

    def _notify(self, notify: bool, ring: XenSharedRing, scope: str, req: Request,
                channel: tuple[EventChannel, Doorbell], ctx: Any, *, to_backend: bool,
                account: bool = True) -> ProcessGenerator:
        """After a push: if the ring says so, send an event (a hypercall) and upcall the peer."""
        if self.host.tracer.enabled:
            old, new = ring.last_push_window
            event = ring.req_event if to_backend else ring.rsp_event
            self._trace(scope, "evtchn-send" if notify else "notify-suppressed", req,
                        f"{'req' if to_backend else 'rsp'}_event={event} in ({old},{new}]? "
                        f"{ring.indexes()}")
        if not notify:
            self.suppressed += 1
            return
        self.sends += 1
        if to_backend:
            req.notifications += 1
        else:
            req.interrupts += 1
        if to_backend or not self.xen1:   # on 1.x Xen raises the guest's event itself
            yield from run_phased(self.host.cpu, ctx, req, (
                (EXIT, self.host.hypercall_us,
                 "xen 1.x: I/O hypercall" if self.xen1 else "EVTCHNOP_send hypercall",
                 PH_EXITS if to_backend else PH_INTERRUPT),), PH_QUEUEING, account=account)
        chan, bell = channel
        if chan.send():
            self.upcalls += 1
            bell.ring()

    def _sleep(self, channel: tuple[EventChannel, Doorbell]) -> ProcessGenerator:
        """A handler sleeps on its channel and clears the pending bit; True if it really slept."""
        chan, bell = channel
        slept = yield from bell.sleep()
        chan.clear()
        return slept

    def _backend_wake_steps(self, thread: bool) -> list[PhasedStep]:
        """Upcall into the driver domain (scheduling its vCPU if it was blocked) + thread.

        None on Xen 1.x: the guest's hypercall (or the device's interrupt) enters the
        hypervisor, which does the work at once.
        """
        if self.xen1:
            return []
        self.backend_wakeups += 1
        steps: list[PhasedStep] = []
        if self.driver.in_use == 0:
            steps.append((EXIT, self.host.hypervisor.xen_domain_switch_us,
                          "xen: schedule the driver domain's vCPU", PH_WAKEUP))
        steps.append((EXIT, self.host.irq_inject_us, "xen: upcall to the driver domain",
                      PH_WAKEUP))
        if thread:
            steps.append((BACKEND, self.host.params.ctx_switch_us, "wake backend kthread",
                          PH_WAKEUP))
        return steps

    def _upcall_steps(self, what: str) -> list[PhasedStep]:
        """The guest takes an upcall: scheduling its vCPU if blocked, delivery and handler."""
        steps, _exits = self.path.guest_irq_steps(what)
        return [(EXIT, self.host.irq_inject_us, "xen: upcall to the guest", PH_INTERRUPT),
                *steps]

    def counters(self) -> dict[str, float]:
        """Event-channel sends and upcalls, suppressed notifications, grant operations."""
        g = self.grants
        return {f"{self.scope}.evtchn_sends": self.sends,
                f"{self.scope}.notifications_suppressed": self.suppressed,
                f"{self.scope}.upcalls": self.upcalls,
                f"{self.scope}.backend_wakeups": self.backend_wakeups,
                f"{self.scope}.grant_maps": g.maps, f"{self.scope}.grant_unmaps": g.unmaps,
                f"{self.scope}.grant_copies": g.copies,
                f"{self.scope}.page_pins": self.pins, f"{self.scope}.page_unpins": self.unpins,
                f"{self.scope}.page_flips": self.flips}

    def _pin_steps(self, what: str, pages: int, copy_bytes: int = 0) -> list[PhasedStep]:
        """Xen 1.x validates and pins (or unpins) ``pages`` payload pages (+ copies a header).

        One type-count operation per page, priced like a grant operation (S71: the payload is
        not copied, its frames stay pinned until the I/O is done).
        """
        if what == "unpin":
            self.unpins += pages
        else:
            self.pins += pages
        label = f"xen: {what} {pages} page(s)" + (
            f", copy {copy_bytes} B header" if copy_bytes else "")
        return [(BACKEND, pages * self.params.grant_op_us + self.host.copy_us(copy_bytes),
                 label, PH_COPIES)]

    def _flip_steps(self, pages: int, batches: int) -> list[PhasedStep]:
        """Deliver ``pages`` received pages by flipping, in ``batches`` hypervisor batches.

        Per page three operations (S70, ``netbk_gop_frag``: ``update_va_mapping`` of the
        backend's virtual address to a fresh frame, an ``MMU_MACHPHYS_UPDATE`` and a
        ``GNTTABOP_transfer`` of the old frame), each priced like a grant operation; per batch
        one TLB flush of every vCPU of the domain giving up its mapping (``UVMF_TLB_FLUSH |
        UVMF_ALL``). 3.x issues them in one multicall per batch; on 1.x Xen does it itself.
        """
        self.flips += pages
        p = self.params
        steps: list[PhasedStep] = []
        if not self.xen1:
            steps.append((EXIT, batches * self.host.hypercall_us,
                          "xen: multicall (update_va_mapping + mmu_update + GNTTABOP_transfer)",
                          PH_COPIES))
        steps.append((BACKEND, 3 * pages * p.grant_op_us, f"xen: flip {pages} page(s)",
                      PH_COPIES))
        steps.append((BACKEND, batches * p.tlb_flush_us * self._flip_flush_vcpus,
                      f"TLB flush of {self._flip_flush_vcpus} vCPU(s)", PH_COPIES))
        return steps

    def _hypercall_steps(self, what: str, ops: int, copy_bytes: int, unmap: bool
                         ) -> list[PhasedStep]:
        """One batched grant hypercall of ``ops`` operations (+ TLB shootdown for unmaps)."""
        host = self.host
        p = self.params
        steps: list[PhasedStep] = [
            (EXIT, host.hypercall_us, f"xen: {what} hypercall", PH_COPIES),
            (BACKEND, ops * p.grant_op_us + host.copy_us(copy_bytes),
             f"xen: {ops} grant op(s)" + (f", {copy_bytes} B copied" if copy_bytes else ""),
             PH_COPIES)]
        if unmap:
            steps.append((BACKEND, p.tlb_flush_us * p.driver_domain_vcpus,
                          f"TLB flush of {p.driver_domain_vcpus} driver-domain vCPU(s)",
                          PH_COPIES))
        return steps


