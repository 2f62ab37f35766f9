"""virtio-blk: one request queue of header + data + status chains, and its backend.

See :mod:`virtlab.paths.virtio` for the rules both virtio devices follow, and
docs/paravirtual.md for the walk-through.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from simpy.events import Event, ProcessGenerator

from virtlab.paths.pvcommon import (
    PAGE_BYTES,
    PH_BACKEND,
    PH_DEVICE,
    PH_GUEST,
    PH_HOST,
    PH_INTERRUPT,
    PH_QUEUEING,
    Doorbell,
    RingMonitor,
    mark,
    run_phased,
)
from virtlab.paths.virtio import VirtioDevice
from virtlab.records import BACKEND, GUEST, HOST, Request

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["VirtioBlk", "BLK_HDR_BYTES", "BLK_STATUS_BYTES"]

#: virtio-blk request header (type, reserved, sector) and status byte (S1 "Device Operation").
BLK_HDR_BYTES = 16
BLK_STATUS_BYTES = 1


class VirtioBlk(VirtioDevice):
    """virtio-blk: one request queue; a request is a chain of header + data + status.

    Tokens are ``(request, bytes, state)`` where ``state = [chains left, done event]`` is shared
    by the chains of one request (large requests are split at ``ring_size - 2`` data pages,
    QEMU's ``seg_max``).
    """

    def __init__(self, path: ParavirtualPath) -> None:
        super().__init__(path, "blk")
        self.vq, self.monitor = self._queue("vq")
        self.irq = Doorbell(self.env, f"{self.scope}.irq")
        self._completed: deque[Any] = deque()
        self._space_waiters: list[Event] = []
        self.full_waits = 0

    def monitors(self) -> list[RingMonitor]:
        """The request queue's monitor."""
        return [self.monitor]

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
        hp = host.params
        p = self.params
        path = self.path
        vq = self.vq
        pages = max(1, math.ceil(nbytes / PAGE_BYTES))
        per_chain = max(1, p.ring_size - 2)
        chains = math.ceil(pages / per_chain)
        yield from path.hold_vcpu()   # submission through the kick, on one vCPU
        yield from run_phased(host.cpu, path.vcpu_held, req, (
            (GUEST, hp.syscall_us + 0.5 * hp.blk_io_us, "guest: submit + block layer",
             PH_GUEST),
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
                event = self.env.event()
                self._space_waiters.append(event)
                yield event
                yield from path.hold_vcpu()
            self.monitor.update(vq.outstanding)
            if host.tracer.enabled:
                self._trace(scope, "avail", req, f"chain head={head}: header + {len(data)} "
                                                 f"data + status {vq.indexes()}")
        yield from self._kick(vq, scope, req)
        path.release_vcpu()
        yield done
        yield from run_phased(host.cpu, path.vcpu, req, (
            (GUEST, hp.ctx_switch_us, "guest: wake application", PH_GUEST),), PH_INTERRUPT)

    def _guest_irq_loop(self) -> ProcessGenerator:
        """``virtblk_done``: reap until re-enabling callbacks finds the used ring empty."""
        host = self.host
        p = self.params
        path = self.path
        vq = self.vq
        scope = f"{self.scope}.vq"
        while True:
            wait = self.irq.wait()
            if wait is not None:
                yield wait
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
                    state[0] -= 1
                    if state[0] == 0:
                        state[1].succeed()
                    if self._space_waiters:
                        waiters, self._space_waiters = self._space_waiters, []
                        for event in waiters:
                            event.succeed()
                if vq.enable_cb():
                    break
            if reaped:
                self.monitor.batch(reaped)
            if irq_steps:
                yield from run_phased(host.cpu, path.vcpu_held, path.nobody, irq_steps,
                                      PH_QUEUEING, account=False)
            path.release_vcpu()

    # Backend -----------------------------------------------------------------------------------
    def _worker_loop(self) -> ProcessGenerator:
        while True:
            yield from self._sleep()
            while True:
                # _submit ends with the final check on the ring; completions that arrive
                # after the last pass ring the bell, which is then pending.
                did = yield from self._submit()
                did = (yield from self._complete()) or did
                if not did:
                    break

    def _submit(self) -> ProcessGenerator:
        host = self.host
        hp = host.params
        p = self.params
        vq = self.vq
        scope = f"{self.scope}.vq"
        count = 0
        weight = p.qemu_tx_burst if self.backend_name == "qemu" else p.vhost_pkt_weight
        vq.disable_notify()
        while count < weight:
            chain = vq.pop()
            if chain is None:
                if vq.enable_notify():
                    vq.disable_notify()
                    continue
                break
            token = vq.token_of(chain.head)
            req = token[0]
            count += 1
            event = ((scope, "pop", f"head={chain.head} ({len(chain.elements)} elements) "
                                    f"{vq.indexes()}") if host.tracer.enabled else None)
            yield from self._run_backend(req, [
                (BACKEND, p.backend_pkt_us, f"{self.backend_name}-blk: pop request",
                 PH_BACKEND),
                (HOST, hp.syscall_us + 0.5 * hp.blk_io_us, "host: AIO submit", PH_HOST)],
                event)
            self.env.process(self._serve(chain.head, token))
        if count:
            self.monitor.batch(count)
        return count > 0

    def _serve(self, head: int, token: Any) -> ProcessGenerator:
        req, size, _state, write, sequential = token
        mark(req, PH_QUEUEING, self.env.now)
        yield from self.host.disk.serve(req, size, write, sequential)
        mark(req, PH_DEVICE, self.env.now)
        self._completed.append((head, token))
        self.poke()
        self.kick_bell.ring()   # the AIO completion wakes the worker (host-internal)

    def _complete(self) -> ProcessGenerator:
        host = self.host
        p = self.params
        vq = self.vq
        scope = f"{self.scope}.vq"
        pending = 0
        req = None
        count = 0
        while self._completed:
            head, token = self._completed.popleft()
            req = token[0]
            count += 1
            yield from self._run_backend(req, [
                (HOST, 0.5 * host.params.blk_io_us, "host: AIO completion", PH_HOST),
                (BACKEND, p.backend_pkt_us, f"{self.backend_name}-blk: push used", PH_BACKEND)])
            vq.add_used(head, token[1] + BLK_STATUS_BYTES)
            if host.tracer.enabled:
                self._trace(scope, "used", req, f"head={head} {vq.indexes()}")
            pending += 1
            if pending >= p.vhost_signal_batch or not self._completed:
                yield from self._signal(vq, scope, req, self.irq, account=True)
                self.monitor.update(vq.outstanding)
                pending = 0
        return count > 0

