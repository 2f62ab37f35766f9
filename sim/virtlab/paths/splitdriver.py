"""A split driver: a guest frontend and its backend sharing rings, whatever the ring family.

:class:`SplitDriver` is the base of the four paravirtual devices: virtio-net and virtio-blk
(through :class:`~virtlab.paths.virtio.VirtioDevice`) and netfront/netback and blkfront/blkback
(through :class:`~virtlab.paths.xen.XenDevice`). It holds only what they do identically, so the
two families differ where the real drivers differ (rings, notifications, how data moves):

* wiring: the path, host and parameters, a dotted ``scope`` and the monitors of its rings;
* the guest kernel's work around the driver: the send syscall and stack before a transmit, the
  block layer before a block request, waking the application when a request completes;
* a transmit's last leg: once the backend has handed the last packet to the NIC, the wire
  takes it to the peer;
* a block request's disk service, and the completion of the last of its ring entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simpy.events import Event, ProcessGenerator

from virtlab.paths.pvcommon import (
    PH_DEVICE,
    PH_GUEST,
    PH_INTERRUPT,
    PH_QUEUEING,
    PhasedStep,
    RingMonitor,
    mark,
    run_phased,
)
from virtlab.records import GUEST, Request

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["SplitDriver"]

#: Ring occupancy is sampled this often: about 200 samples over a default run, enough to plot.
_SAMPLE_EVERY_US = 150.0


class SplitDriver:
    """What every frontend/backend pair of the paravirtual path shares.

    Parameters
    ----------
    path:
        The paravirtual path this device belongs to (host, vCPU, parameters, tracer).
    name:
        The device's part of its scope, e.g. ``"virtio-net"`` in ``"vm0.virtio-net"``.

    """

    def __init__(self, path: ParavirtualPath, name: str) -> None:
        self.path = path
        self.host = path.host
        self.env = path.env
        self.params = path.params
        self.scope = f"{path.name}.{name}"
        self._monitors: list[RingMonitor] = []
        #: The disk's hardware queue of the backend's one submitting thread (a block device).
        self.disk_queue = 0

    def _monitor(self, name: str, size: int) -> RingMonitor:
        """A monitor for the ring ``name`` of ``size`` entries (reported by :meth:`monitors`)."""
        monitor = RingMonitor(self.env, f"{self.scope}.{name}", size, _SAMPLE_EVERY_US)
        self._monitors.append(monitor)
        return monitor

    def monitors(self) -> list[RingMonitor]:
        """The monitors of the device's rings, in the order the rings were made."""
        return list(self._monitors)

    def _trace(self, scope: str, kind: str, req: Request, detail: str) -> None:
        self.host.trace(scope, kind, req.id, detail)

    # The guest kernel around the driver ---------------------------------------------------------
    def _stack_tx_step(self, nbytes: int, packets: int) -> PhasedStep:
        """The send syscall, its copy and the stack's transmit work, before the driver's.

        ``nbytes == 0`` is a pure ACK the kernel sends by itself: no syscall, no copy.
        """
        hp = self.host.params
        if not nbytes:
            return (GUEST, packets * hp.stack_pkt_us, "guest: stack tx (pure ACK)", PH_GUEST)
        return (GUEST, hp.syscall_us + self.host.copy_us(nbytes) + packets * hp.stack_pkt_us,
                "guest: send syscall + copy + stack tx", PH_GUEST)

    def _block_layer_step(self) -> PhasedStep:
        """The submit syscall and the block layer's half of the I/O work, before the driver's."""
        hp = self.host.params
        return (GUEST, hp.syscall_us + 0.5 * hp.blk_io_us, "guest: submit + block layer",
                PH_GUEST)

    def _wake_application(self, req: Request, done: Event) -> ProcessGenerator:
        """Wait for the request's completion, then wake the application blocked on it."""
        yield done
        yield from run_phased(self.host.cpu, self.path.vcpu, req, (
            (GUEST, self.host.params.ctx_switch_us, "guest: wake application", PH_GUEST),),
            PH_INTERRUPT)

    # Backend and device -------------------------------------------------------------------------
    def _to_peer(self, req: Request, handed: Event) -> ProcessGenerator:
        """Wait for the backend to hand the last packet to the NIC, then for the wire.

        ``handed`` fires with the time the packet's last byte reaches the peer.
        """
        arrive_us = yield handed
        mark(req, PH_QUEUEING, self.env.now)   # until the backend handed it to the wire
        yield self.env.timeout(arrive_us - self.env.now)
        mark(req, PH_DEVICE, self.env.now)     # serialization and the wire

    def _serve_disk(self, req: Request, size: int, write: bool, sequential: bool
                    ) -> ProcessGenerator:
        """The disk serves one ring entry's data; its time is the request's *device* phase."""
        mark(req, PH_QUEUEING, self.env.now)
        yield from self.host.disk.serve(req, size, write, sequential, self.disk_queue)
        mark(req, PH_DEVICE, self.env.now)

    @staticmethod
    def _entry_done(state: list[Any]) -> None:
        """One ring entry of a block request completed; the last one completes the request.

        ``state = [entries left, done event]`` is shared by the entries of one request.
        """
        state[0] -= 1
        if state[0] == 0:
            state[1].succeed()
