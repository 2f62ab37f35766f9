"""Paravirtualization: a frontend and a backend sharing bounded rings (virtio-style).

No hardware is emulated. The guest's frontend driver places requests on a ring and notifies
the backend (a *kick*: one lightweight exit through ioeventfd, S8) only when the backend sleeps;
a busy backend drains everything queued in the meantime without further kicks (S1, S3, S7).
The backend (vhost in the host kernel, or QEMU's I/O thread) copies data, talks to the host's
bridge or disk, puts completions on the used ring and interrupts the guest only if the guest is
not already polling (NAPI, S5). A full ring blocks the frontend: back-pressure, never loss.

Simplifications of this first version, deepened later: a ring is a bounded slot pool with
free-running indexes, not the descriptor table itself; transmit completions are reaped by the
next transmit (no transmit interrupt); a block request takes one slot (indirect descriptors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext, Semaphore
from virtlab.drain import DrainLoop
from virtlab.host import BLK, BLK_DONE, RX, TX, Host
from virtlab.params import Params, param
from virtlab.paths.vm import VmPath
from virtlab.records import BACKEND, EXIT, GUEST, HOST, Request

__all__ = ["ParavirtualPath", "ParavirtualParams", "Ring"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParavirtualParams(Params):
    """Ring sizes, backend choice and costs of the paravirtual path."""

    section = "paravirtual"

    ring_size: int = param(256, lo=2, hi=32768, power_of_two=True,
                           source="S1 (power of two, max 32768), S6 (QEMU default 256)",
                           doc="Descriptors per virtqueue.")
    backend: str = param("vhost", choices=("vhost", "qemu"), source="mechanics.md 1.5",
                         doc="vhost worker in the host kernel, or QEMU's user-space I/O thread.")
    backend_pkt_us: float = param(0.5, unit="µs", lo=0.0, hi=1e4, source="assumption",
                                  doc="Backend work per request or packet (pop, translate, "
                                      "push used).")
    ring_op_us: float = param(0.1, unit="µs", lo=0.0, hi=1e4, source="assumption",
                              doc="Frontend work to add or reap one descriptor chain.")
    batch_limit: int = param(64, lo=1, hi=32768, source="S7 (VHOST_NET_BATCH 64)",
                             doc="Requests the backend handles before re-checking for others.")
    qemu_notify_latency_us: float = param(
        20.0, unit="µs", lo=0.0, hi=1e6, source="S29 (guest -> QEMU iothread notify)",
        doc="Latency of waking QEMU's I/O thread (backend = 'qemu' only).")


class Ring:
    """A bounded shared ring seen as slots with free-running 16-bit indexes.

    States of a slot: *free* -> *available* (frontend added it) -> *used* (backend completed
    it) -> *free* (frontend reaped it). Invariants: ``0 <= (avail_idx - used_idx) mod 2**16
    <= size`` counts slots not yet completed; a frontend that finds no free slot waits
    (back-pressure), and nothing is dropped.
    """

    def __init__(self, env: Any, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.slots = Semaphore(env, name, size)
        self.avail_idx = 0
        self.used_idx = 0

    def add(self) -> Any:
        """Take a free slot (None) or return an event to wait for one."""
        return self.slots.acquire()

    def publish(self) -> None:
        """Make one added slot available to the backend."""
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF

    def complete(self) -> None:
        """The backend marks one slot used."""
        self.used_idx = (self.used_idx + 1) & 0xFFFF

    def reap(self) -> None:
        """The frontend frees one used slot."""
        self.slots.release()

    @property
    def outstanding(self) -> int:
        """Slots made available and not yet used (mod 2**16 arithmetic)."""
        return (self.avail_idx - self.used_idx) & 0xFFFF


class ParavirtualPath(VmPath):
    """A guest with split drivers: network and block frontends, a backend per device.

    Components beyond :class:`~virtlab.paths.vm.VmPath`: rings ``txq``, ``rxq``, ``blkq``; the
    network backend ``net_backend`` and the block backend ``blk_backend`` (each one thread).
    """

    approach: ClassVar[str] = "paravirtual"

    def __init__(self, host: Host, name: str, vcpu: ExecContext,
                 params: ParavirtualParams | None = None) -> None:
        super().__init__(host, name, vcpu)
        p = self.params = params if params is not None else ParavirtualParams()
        env = host.env
        self.txq = Ring(env, f"{name}.virtio-net.txq", p.ring_size)
        self.rxq = Ring(env, f"{name}.virtio-net.rxq", p.ring_size)
        self.blkq = Ring(env, f"{name}.virtio-blk.vq", p.ring_size)
        self.net_ctx = ExecContext(env, f"{name}.{p.backend}-net", 1)
        self.blk_ctx = ExecContext(env, f"{name}.{p.backend}-blk", 1)
        self.net_backend = DrainLoop(env, f"{name}.{p.backend}-net", self._net_backend_batch,
                                     batch_limit=p.batch_limit, on_wake=self._wake_net, tracer=host.tracer)
        self.blk_backend = DrainLoop(env, f"{name}.{p.backend}-blk", self._blk_backend_batch,
                                     batch_limit=p.batch_limit, on_wake=self._wake_blk, tracer=host.tracer)
        self.segment_bytes = host.nic_params.tso_bytes

    def loops(self) -> list[DrainLoop]:
        """Consumers: host NIC, guest interrupt handlers and both backends."""
        return [*super().loops(), self.net_backend, self.blk_backend]

    def ring_stats(self) -> dict[str, tuple[int, int]]:
        """Capacity and maximum occupancy of each ring."""
        return {r.name: (r.size, r.slots.max_in_use) for r in (self.txq, self.rxq, self.blkq)}

    # Frontend side -----------------------------------------------------------------------------
    def _kick_if_needed(self, backend: DrainLoop, item: Any) -> ProcessGenerator:
        """Publish ``item``; kick (one lightweight exit) only if the backend sleeps."""
        req = item[1]
        if backend.push(item):
            req.notifications += 1
            req.exits += 1
            yield from self.host.cpu.run(self.vcpu, req, (
                (EXIT, self.host.exit_kernel_us, "kick: ioeventfd exit"),))

    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Guest stack -> add to the tx ring (wait if full) -> kick if needed -> backend sends."""
        host = self.host
        hp = host.params
        packets = host.segments(nbytes, self.segment_bytes)
        yield from host.cpu.run(self.vcpu, req, (
            (GUEST, hp.syscall_us + host.copy_us(nbytes) + packets * hp.stack_pkt_us,
             "guest: send syscall + copy + stack tx"),
            (GUEST, self.params.ring_op_us, "guest: add descriptor chain"),
        ))
        wait = self.txq.add()
        if wait is not None:
            yield wait
        self.txq.publish()
        handed = self.env.event()
        yield from self._kick_if_needed(self.net_backend, (TX, req, nbytes, handed))
        arrive_us = yield handed
        # The vCPU may resume late (its kick waited for a busy vCPU) after the bytes arrived.
        yield self.env.timeout(max(0.0, arrive_us - self.env.now))

    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """Guest block layer -> add to the ring -> kick if needed -> backend AIO -> interrupt."""
        host = self.host
        hp = host.params
        yield from host.cpu.run(self.vcpu, req, (
            (GUEST, hp.syscall_us + 0.5 * hp.blk_io_us, "guest: submit + block layer"),
            (GUEST, self.params.ring_op_us, "guest: add descriptor chain"),
        ))
        wait = self.blkq.add()
        if wait is not None:
            yield wait
        self.blkq.publish()
        done = self.env.event()
        yield from self._kick_if_needed(self.blk_backend, (BLK, req, nbytes, done, write,
                                                           sequential))
        yield done
        yield from host.cpu.run(self.vcpu, req, ((GUEST, hp.ctx_switch_us,
                                                   "guest: wake application"),))

    # Backend side ------------------------------------------------------------------------------
    def _wake(self, ctx: ExecContext, item: Any) -> ProcessGenerator:
        if self.params.backend == "qemu":
            yield self.env.timeout(self.params.qemu_notify_latency_us)
        yield from self.host.cpu.run(ctx, item[1], (
            (BACKEND, self.host.params.ctx_switch_us, f"wake {ctx.name}"),))

    def _wake_net(self, item: Any) -> ProcessGenerator:
        yield from self._wake(self.net_ctx, item)

    def _wake_blk(self, item: Any) -> ProcessGenerator:
        yield from self._wake(self.blk_ctx, item)

    def _inject(self, ctx: ExecContext, loop: DrainLoop, item: Any) -> ProcessGenerator:
        """Complete ``item`` to the guest; pay for an interrupt only if the guest sleeps."""
        if self.interrupt_guest(loop, item) and self.host.irq_inject_us > 0.0:
            yield from self.host.cpu.run(ctx, item[1], (
                (EXIT, self.host.irq_inject_us, "irqfd: inject interrupt"),))

    def forward_rx(self, item: Any) -> None:
        """The tap wakes the network backend (a host-internal eventfd, not a guest kick)."""
        self.net_backend.push(item)

    def _net_backend_batch(self, batch: list[Any]) -> ProcessGenerator:
        host = self.host
        p = self.params
        for item in batch:
            kind, req, nbytes, event = item
            if kind == TX:
                packets = host.segments(nbytes, self.segment_bytes)
                yield from host.cpu.run(self.net_ctx, req, (
                    (BACKEND, p.backend_pkt_us + host.copy_us(nbytes),
                     "backend: pop tx + copy from guest"),
                    (HOST, packets * host.params.bridge_pkt_us, "host: tap + bridge + driver"),
                ))
                self.txq.complete()
                self.txq.reap()  # the frontend frees it at its next transmit (cost in ring_op)
                arrive_us = host.nic.tx.offer(self.env.now, host.nic.wire_bytes(nbytes))
                if host.tracer.enabled:
                    host.trace("nic.tx", "wire", req.id, f"{nbytes} B on the wire, at peer "
                                                         f"{arrive_us:.3f} µs")
                event.succeed(arrive_us)
            else:  # RX: a posted guest buffer is needed; wait for one if the guest lags
                wait = self.rxq.add()
                if wait is not None:
                    yield wait
                self.rxq.publish()
                yield from host.cpu.run(self.net_ctx, req, (
                    (BACKEND, p.backend_pkt_us + host.copy_us(nbytes),
                     "backend: copy into guest buffer"),))
                self.rxq.complete()
                yield from self._inject(self.net_ctx, self.guest_nic, item)

    def _blk_backend_batch(self, batch: list[Any]) -> ProcessGenerator:
        host = self.host
        p = self.params
        for item in batch:
            req = item[1]
            if item[0] == BLK:
                yield from host.cpu.run(self.blk_ctx, req, (
                    (BACKEND, p.backend_pkt_us, "backend: pop request"),
                    (HOST, host.params.syscall_us + 0.5 * host.params.blk_io_us,
                     "host: AIO submit"),))
                self.env.process(self._serve_block(item))
            else:  # BLK_DONE
                yield from host.cpu.run(self.blk_ctx, req, (
                    (HOST, 0.5 * host.params.blk_io_us, "host: AIO completion"),
                    (BACKEND, p.backend_pkt_us, "backend: push used"),))
                self.blkq.complete()
                yield from self._inject(self.blk_ctx, self.guest_blk, item)

    def _serve_block(self, item: Any) -> ProcessGenerator:
        _kind, req, nbytes, done, write, sequential = item
        yield from self.host.disk.serve(req, nbytes, write, sequential)
        self.blk_backend.push((BLK_DONE, req, nbytes, done))

    # Guest interrupt side ----------------------------------------------------------------------
    def _guest_irq(self, item: Any) -> ProcessGenerator:
        host = self.host
        req = item[1]
        req.exits += host.eoi_exits
        yield from host.cpu.run(self.vcpu, req, (
            (GUEST, host.params.irq_us, "guest: interrupt handler"),
            (EXIT, host.eoi_exits * host.exit_kernel_us, "EOI exit"),
        ))

    def _guest_nic_batch(self, batch: list[Any]) -> ProcessGenerator:
        host = self.host
        for _kind, req, nbytes, done in batch:
            packets = host.segments(nbytes, self.segment_bytes)
            yield from host.cpu.run(self.vcpu, req, (
                (GUEST, packets * host.params.stack_pkt_us + self.params.ring_op_us,
                 "guest: stack rx + reap + refill"),))
            self.rxq.reap()
            done.succeed()

    def _guest_blk_batch(self, batch: list[Any]) -> ProcessGenerator:
        host = self.host
        for item in batch:
            req, done = item[1], item[3]
            yield from host.cpu.run(self.vcpu, req, (
                (GUEST, 0.5 * host.params.blk_io_us + self.params.ring_op_us,
                 "guest: block completion + reap"),))
            self.blkq.reap()
            done.succeed()
