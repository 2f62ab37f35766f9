"""virtio-blk's guest side: Linux's driver, one request queue of header + data + status chains.

The rules it follows, and the kick it sends, are the transport's (:mod:`virtlab.paths.virtio`);
the backend that serves its queue is :class:`~virtlab.paths.virtio_blk_backend.VirtioBlkBackend`.
docs/paravirtual.md has the walk-through.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from simpy.events import ProcessGenerator

from virtlab.paths.pvcommon import (
    PAGE_BYTES,
    PH_GUEST,
    PH_INTERRUPT,
    PH_QUEUEING,
    WaitList,
    run_phased,
)
from virtlab.paths.virtio_blk_backend import BLK_HDR_BYTES, BLK_STATUS_BYTES, VirtioBlkBackend
from virtlab.records import GUEST, Request

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["VirtioBlk"]


class VirtioBlk(VirtioBlkBackend):
    """virtio-blk: Linux's driver on one request queue, over its backend.

    A request is a chain of header + data + status. Tokens are ``(request, bytes, state, write,
    sequential)`` where ``state = [chains left, done event]`` is shared by the chains of one
    request (large requests are split at ``ring_size - 2`` data pages, QEMU's ``seg_max``).
    Like :class:`~virtlab.paths.virtio_net.VirtioNet`, the driver is layered on its backend's
    class: one object is the device pair the path holds as ``blk``.
    """

    def __init__(self, path: ParavirtualPath) -> None:
        super().__init__(path)
        # The backend (vhost-style worker or QEMU's I/O thread) submits from one thread.
        (self.disk_queue,) = self.host.claim_disk_queues(1)
        self.space_waiters = WaitList(self.env)
        self.full_waits = 0

    def counters(self) -> dict[str, int]:
        """Base counters plus waits for a full ring."""
        return {**super().counters(), f"{self.scope}.ring_full_waits": self.full_waits}

    def start(self) -> None:
        """Start the backend worker and the guest's completion handler."""
        self.env.process(self._worker_loop())
        self.env.process(self._guest_irq_loop())

    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """Block layer -> chains on the ring -> kick -> backend AIO -> interrupt -> wake."""
        host = self.host
        p = self.params
        path = self.path
        vq = self.vq
        pages = max(1, math.ceil(nbytes / PAGE_BYTES))
        per_chain = max(1, p.ring_size - 2)
        chains = math.ceil(pages / per_chain)
        yield from path.hold_vcpu()   # submission through the kick, on one vCPU
        yield from run_phased(host.cpu, path.vcpu_held, req, (
            self._block_layer_step(),
            (GUEST, p.ring_op_us * chains, "guest: virtio-blk add chains", PH_GUEST),
        ), PH_QUEUEING)
        done = self.env.event()
        state = [chains, done]
        scope = f"{self.scope}.vq"
        left = nbytes
        for _ in range(chains):
            size = min(left, per_chain * PAGE_BYTES)
            left -= size
            data = [min(PAGE_BYTES, size - off) for off in range(0, size, PAGE_BYTES)] or [0]
            out = [BLK_HDR_BYTES, *data] if write else [BLK_HDR_BYTES]
            into = [BLK_STATUS_BYTES] if write else [*data, BLK_STATUS_BYTES]
            token = (req, size, state, write, sequential)
            while (head := vq.add(out, into, token)) is None:
                # Full ring: kick what is queued (blk-mq commit) and wait for completions.
                self.full_waits += 1
                yield from self._kick(vq, scope, req)
                path.release_vcpu()
                yield self.space_waiters.wait()
                yield from path.hold_vcpu()
            self.monitor.update(vq.outstanding)
            if host.tracer.enabled:
                self._trace(scope, "avail", req, f"chain head={head}: header + {len(data)} "
                                                 f"data + status {vq.indexes()}")
        yield from self._kick(vq, scope, req)
        path.release_vcpu()
        yield from self._wake_application(req, done)

    def _guest_irq_loop(self) -> ProcessGenerator:
        """``virtblk_done``: reap until re-enabling callbacks finds the used ring empty."""
        host = self.host
        p = self.params
        path = self.path
        vq = self.vq
        scope = f"{self.scope}.vq"
        while True:
            yield from self.irq.sleep()
            yield from path.wait_for_vcpu_thread()
            irq_steps, irq_exits = path.guest_irq_steps("virtio-blk")
            yield from path.hold_vcpu()
            reaped = 0
            while True:
                vq.disable_cb()
                while (got := vq.get_buf()) is not None:
                    req, _size, state = got[0][:3]
                    reaped += 1
                    self.monitor.update(vq.outstanding)
                    if host.tracer.enabled:
                        self._trace(scope, "reap", req, vq.indexes())
                    steps = [*irq_steps, (GUEST, 0.5 * host.params.blk_io_us + p.ring_op_us,
                                          "guest: virtio-blk completion", PH_INTERRUPT)]
                    gap = PH_INTERRUPT if irq_steps else PH_QUEUEING
                    path.count_irq_exits(req, irq_exits)
                    irq_steps = []
                    irq_exits = 0
                    yield from run_phased(host.cpu, path.vcpu_held, req, steps, gap)
                    self._entry_done(state)
                    self.space_waiters.wake_all()
                if vq.enable_cb():
                    break
            if reaped:
                self.monitor.batch(reaped)
            yield from path.end_guest_irq(irq_steps)
