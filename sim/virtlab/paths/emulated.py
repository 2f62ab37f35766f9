"""Full virtualization: trap-and-emulate devices (an e1000-like NIC, an AHCI/IDE-like disk).

The unmodified guest driver programs the device through its registers; each register access
traps (a VM exit to user space), a device model in the VMM does the work on the vCPU's thread,
copies data between guest memory and its buffers, and completes with an injected interrupt
whose handler causes more exits (mechanics.md 3 and 5b(a)-(c)):

* transmit: one tail-register (TDT) write per burst of ``tx_doorbell_batch`` packets (S17);
* interrupt: ICR read, IMC write, STATUS read, IMS write, STATUS read = 5 exits (S17), plus the
  EOI exit without APICv (S30), plus one RDT refill write per receive poll (S17);
* disk: AHCI 2 writes to issue and 5 accesses per interrupt, 32 tags (S20); IDE 19 port
  accesses to issue and 7 to complete, one command at a time (S19).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext, Semaphore
from virtlab.drain import DrainLoop
from virtlab.host import BLK_DONE, RX, Host
from virtlab.params import Params, param
from virtlab.paths.vm import VmPath
from virtlab.records import BACKEND, EXIT, GUEST, HOST, Request

__all__ = ["EmulatedPath", "EmulatedParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatedParams(Params):
    """Register-access counts and device-model costs of the emulated devices."""

    section = "emulated"

    tx_doorbell_batch: int = param(
        64, lo=1, hi=65536, source="S17 (xmit_more defers the TDT write to the end of a burst)",
        doc="Packets per transmit tail-register write (1 = one exit per packet).")
    irq_exits: int = param(5, lo=0, hi=1000, source="S17 (ICR, IMC, STATUS, IMS, STATUS)",
                           doc="Trapping register accesses per NIC interrupt.")
    rx_refill_exits: int = param(1, lo=0, hi=1000, source="S17 (RDT write per refill)",
                                 doc="Trapping writes per receive poll (ring refill).")
    device_tso: bool = param(True, source="S18 (QEMU's e1000 emulates TSO)",
                             doc="The emulated NIC accepts 64 KiB segments (else MTU packets).")
    copies_per_packet: int = param(1, lo=0, hi=8, source="S18 (DMA copy guest <-> buffer)",
                                   doc="Copies of the payload made by the device model.")
    device_access_us: float = param(1.0, unit="µs", lo=0.0, hi=1e4, source="assumption",
                                    doc="Device-model work per trapped register access.")
    disk_controller: str = param("ahci", choices=("ahci", "ide"), source="S19, S20",
                                 doc="Emulated disk controller.")
    ahci_issue_exits: int = param(2, lo=0, hi=1000, source="S20 (SActive + CI writes)",
                                  doc="Trapping writes to issue one AHCI command.")
    ahci_complete_exits: int = param(5, lo=0, hi=1000, source="S20",
                                     doc="Trapping accesses per AHCI interrupt.")
    ahci_queue_depth: int = param(32, lo=1, hi=32, source="S20 (NCQ tags)",
                                  doc="AHCI commands in flight.")
    ide_issue_exits: int = param(19, lo=0, hi=1000, source="S19 (derived, LBA48 BMDMA)",
                                 doc="Trapping port accesses to issue one IDE DMA command.")
    ide_complete_exits: int = param(7, lo=0, hi=1000, source="S19 (derived)",
                                    doc="Trapping port accesses to complete one IDE command.")


class EmulatedPath(VmPath):
    """A guest using emulated hardware.

    Components beyond :class:`~virtlab.paths.vm.VmPath`: the VMM's I/O thread ``iothread``
    (receives packets from the tap and completes disk AIO) and the controller's command slots
    ``tags`` (32 for AHCI, 1 for IDE).
    """

    approach: ClassVar[str] = "emulated"

    def __init__(self, host: Host, name: str, vcpu: ExecContext,
                 params: EmulatedParams | None = None) -> None:
        super().__init__(host, name, vcpu)
        p = self.params = params if params is not None else EmulatedParams()
        self.iothread_ctx = ExecContext(host.env, f"{name}.vmm-iothread", 1)
        self.iothread = DrainLoop(host.env, f"{name}.vmm-iothread", self._iothread_batch,
                                  batch_limit=host.params.napi_budget,
                                  on_wake=self._iothread_wake, tracer=host.tracer)
        ahci = p.disk_controller == "ahci"
        depth = p.ahci_queue_depth if ahci else 1
        self.tags = Semaphore(host.env, f"{name}.{p.disk_controller}.tags", depth)
        self.issue_exits = p.ahci_issue_exits if ahci else p.ide_issue_exits
        self.complete_exits = p.ahci_complete_exits if ahci else p.ide_complete_exits
        self.segment_bytes = (host.nic_params.tso_bytes if p.device_tso
                              else host.nic_params.payload_per_frame_bytes)

    def loops(self) -> list[DrainLoop]:
        """Consumers: host NIC, guest interrupt handlers and the VMM I/O thread."""
        return [*super().loops(), self.iothread]

    def ring_stats(self) -> dict[str, tuple[int, int]]:
        """The controller's command slots."""
        return {self.tags.name: (self.tags.capacity, self.tags.max_in_use)}

    def _exit_steps(self, count: int, what: str) -> tuple[tuple[int, float, str], ...]:
        host = self.host
        return ((EXIT, count * host.exit_user_us, f"{count} exits to the VMM ({what})"),
                (BACKEND, count * self.params.device_access_us, f"device model ({what})"))

    # Transmit ----------------------------------------------------------------------------------
    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Guest stack -> descriptors -> TDT exit -> device model copies and sends (vCPU blocked)."""
        host = self.host
        hp = host.params
        packets = host.segments(nbytes, self.segment_bytes)
        doorbells = -(-packets // self.params.tx_doorbell_batch)
        req.exits += doorbells
        yield from host.cpu.run(self.vcpu, req, (
            (GUEST, hp.syscall_us + host.copy_us(nbytes) + packets * hp.stack_pkt_us,
             "guest: send syscall + copy + stack tx"),
            *self._exit_steps(doorbells, "TDT write"),
            (BACKEND, self.params.copies_per_packet * host.copy_us(nbytes),
             "device model: DMA copy"),
            (HOST, hp.syscall_us + packets * hp.bridge_pkt_us, "host: tap write + bridge"),
        ))
        yield from host.transmit(req, nbytes, self.guest_nic)

    # Receive -----------------------------------------------------------------------------------
    def forward_rx(self, item: Any) -> None:
        """The tap wakes the VMM's I/O thread."""
        self.iothread.push(item)

    def _iothread_wake(self, item: Any) -> ProcessGenerator:
        yield from self.host.cpu.run(self.iothread_ctx, item[1], (
            (BACKEND, self.host.params.ctx_switch_us, "wake VMM I/O thread"),))

    def _iothread_batch(self, batch: list[Any]) -> ProcessGenerator:
        host = self.host
        p = self.params
        for item in batch:
            kind, req, nbytes, _done = item
            if kind == RX:
                yield from host.cpu.run(self.iothread_ctx, req, (
                    (BACKEND, p.device_access_us + p.copies_per_packet * host.copy_us(nbytes),
                     "device model: rx DMA copy"),))
                self.interrupt_guest(self.guest_nic, item)
            else:  # BLK_DONE: the host's AIO completion reaches the device model
                yield from host.cpu.run(self.iothread_ctx, req, (
                    (HOST, 0.5 * host.params.blk_io_us, "host: AIO completion"),
                    (BACKEND, p.device_access_us, "device model: complete command"),))
                self.interrupt_guest(self.guest_blk, item)

    def _guest_irq(self, item: Any) -> ProcessGenerator:
        host = self.host
        req = item[1]
        exits = self.complete_exits if item[0] == BLK_DONE else self.params.irq_exits
        req.exits += exits + host.eoi_exits
        yield from host.cpu.run(self.vcpu, req, (
            (EXIT, host.irq_inject_us, "interrupt injection"),
            (GUEST, host.params.irq_us, "guest: interrupt handler"),
            *self._exit_steps(exits, "interrupt registers"),
            (EXIT, host.eoi_exits * host.exit_kernel_us, "EOI exit"),
        ))

    def _guest_nic_batch(self, batch: list[Any]) -> ProcessGenerator:
        host = self.host
        refill_req = None
        for kind, req, nbytes, done in batch:
            if kind == RX:
                packets = host.segments(nbytes, self.segment_bytes)
                yield from host.cpu.run(self.vcpu, req, (
                    (GUEST, packets * host.params.stack_pkt_us, "guest: stack rx"),))
                done.succeed()
                refill_req = refill_req or req
        if refill_req is not None and self.params.rx_refill_exits:
            refill_req.exits += self.params.rx_refill_exits
            yield from host.cpu.run(self.vcpu, refill_req,
                                    self._exit_steps(self.params.rx_refill_exits, "RDT refill"))

    # Block I/O ---------------------------------------------------------------------------------
    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """Guest block layer -> register exits -> device model AIO -> disk -> interrupt."""
        host = self.host
        hp = host.params
        wait = self.tags.acquire()
        if wait is not None:
            yield wait
        req.exits += self.issue_exits
        yield from host.cpu.run(self.vcpu, req, (
            (GUEST, hp.syscall_us + 0.5 * hp.blk_io_us, "guest: submit + block layer"),
            *self._exit_steps(self.issue_exits, "command issue"),
            (HOST, hp.syscall_us + 0.5 * hp.blk_io_us, "host: AIO submit"),
        ))
        yield from host.disk.serve(req, nbytes, write, sequential)
        done = self.env.event()
        self.iothread.push((BLK_DONE, req, nbytes, done))
        yield done
        yield from host.cpu.run(self.vcpu, req, ((GUEST, hp.ctx_switch_us,
                                                   "guest: wake application"),))

    def _guest_blk_batch(self, batch: list[Any]) -> ProcessGenerator:
        host = self.host
        for _kind, req, _nbytes, done in batch:
            yield from host.cpu.run(self.vcpu, req, (
                (GUEST, 0.5 * host.params.blk_io_us, "guest: block completion"),))
            self.tags.release()
            done.succeed()
