"""Device assignment: an SR-IOV virtual function or a whole device handed to the guest (VFIO).

The guest runs the device's own driver (ixgbevf, mlx5, nvme) against the real hardware: the
device's registers are mapped into the guest (QEMU ``hw/vfio/pci.c`` mmaps the BARs, so a
doorbell write such as ixgbevf's tail write or nvme's ``nvme_write_sq_db`` does not trap), and
the device DMAs straight into guest memory through the IOMMU. The data path is therefore the
native one, run by the guest kernel on its vCPUs: no exits, no copies beyond the socket copy,
no host bridge.

What the hypervisor still sees is the device's interrupts (docs/passthrough.md):

* **without posted interrupts**: the device's MSI-X message is a *host* interrupt; VFIO's
  handler (``vfio_msihandler``) signals an eventfd, whose irqfd (``irqfd_wakeup``) has KVM
  inject the vector into the guest. A running vCPU must exit for the injection
  (``irq_inject_cycles``, counted as an ``inject`` exit); a halted vCPU has exited already (on
  HLT), so the injection rides on its wake-up's VM entry: the HLT exit is the exit, and only
  the injection work beyond an exit is charged. The guest's EOI then exits unless the
  interrupt controller is virtualized (``hypervisor.eoi_exit``);
* **with posted interrupts** (``hypervisor.posted_interrupts``: APICv, and VT-d posted
  interrupts for the assigned device through KVM's IRQ bypass, ``vmx_pi_update_irte``): the
  IOMMU writes the vector into the vCPU's posted-interrupt descriptor. No host handler, no
  injection exit, no EOI exit; a halted vCPU is still woken as on every VM path
  (:meth:`~virtlab.paths.vm.VmPath.vcpu_wake_steps`).

Request flow (network receive): the VF DMAs the frame into a guest buffer and raises its MSI-X
if the guest's NAPI instance sleeps -> interrupt delivery (above) -> guest TCP/IP per segment
[vCPU] -> wake the application, ``recv`` + copy [vCPU]. Send: ``send`` syscall + copy + guest
TCP/IP + the tail write [vCPU] -> the VF's link (shared with the host's port) -> peer; the
transmit completion interrupts the guest if its NAPI instance sleeps. Block I/O: syscall +
block layer + submission-queue doorbell [vCPU] -> device -> completion MSI-X (delivery as
above) -> block-layer completion -> the application is woken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext, Step
from virtlab.drain import DrainLoop
from virtlab.host import BLK_DONE, RX, Host
from virtlab.params import Params
from virtlab.paths.pvcommon import EXIT_EOI, EXIT_INJECT, count_exits
from virtlab.paths.vm import VmPath
from virtlab.records import EXIT, GUEST, HOST, Request

__all__ = ["PassthroughPath", "PassthroughParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PassthroughParams(Params):
    """Device assignment has no costs of its own.

    The guest kernel's work is priced by ``[host]`` (the same kernel costs as natively) and its
    interrupts by ``[hypervisor]``.
    """

    section = "passthrough"


class PassthroughPath(VmPath):
    """A guest driving an assigned device (SR-IOV VF or VFIO) with its own kernel's driver.

    Components: ``vcpu`` (the guest's vCPUs, which run the driver, the stack and the
    application), the guest's NAPI instances ``guest_nic`` and ``guest_blk`` (one interrupt
    wakes each; completions arriving while it polls are taken without another), and the host
    context ``softirq`` that runs VFIO's MSI handler when interrupts are not posted. The host's
    own NIC queue and bridge (``host_nic`` of :class:`~virtlab.paths.vm.VmPath`) are not used.

    Invariants: no step of the data path is an exit; every delivered device interrupt costs
    exactly ``inject_exits + eoi_exits`` counted exits on a running vCPU and ``1 + eoi_exits``
    (the HLT) on a halted one, where ``inject_exits`` is 0 with posted interrupts and 1
    without.
    """

    approach: ClassVar[str] = "passthrough"

    def __init__(self, host: Host, name: str, vcpu: ExecContext,
                 params: Params | None = None) -> None:
        super().__init__(host, name, vcpu)
        self.params = params if params is not None else PassthroughParams()
        hp = host.params
        self.segment_bytes = host.nic_params.tso_bytes
        self.posted = bool(host.hypervisor.posted_interrupts)
        inject_us = host.irq_inject_us  # 0 with posted interrupts (virtlab.host)
        # The assigned device's interrupts are MSI/MSI-X: with PV EOI the EOI does not exit.
        self.eoi_exits = host.msi_eoi_exits
        self.eoi_us = self.eoi_exits * host.exit_kernel_us
        # Fixed step blocks of an interrupt's delivery, built once.
        self._host_irq_steps: tuple[Step, ...] = () if self.posted else (
            (HOST, hp.irq_us, "host: VFIO MSI handler -> irqfd"),)
        handler: list[Step] = [(GUEST, hp.irq_us, "guest: device interrupt handler")]
        if self.eoi_us > 0.0:
            handler.append((EXIT, self.eoi_us, "guest EOI write -> exit"))
        #: Delivery to a running vCPU: the exit that injects the vector, then the handler.
        inject: list[Step] = ([(EXIT, inject_us, "KVM: exit to inject the device's MSI")]
                              if inject_us > 0.0 else [])
        self._irq_running: tuple[Step, ...] = (*inject, *handler)
        self.inject_exits = 1 if inject_us > 0.0 else 0
        #: Delivery to a halted vCPU, after its wake-up steps: the injection work at the
        #: wake-up's VM entry (what an injection costs beyond the exit it no longer needs).
        self.inject_work_us = max(0.0, inject_us - host.exit_kernel_us) if inject_us else 0.0
        inject_work: list[Step] = (
            [(EXIT, self.inject_work_us, "KVM: inject the MSI at the wake-up's VM entry")]
            if self.inject_work_us > 0.0 else [])
        self._irq_halted: tuple[Step, ...] = (*inject_work, *handler)
        self._blk_submit_steps: tuple[Step, ...] = (
            (GUEST, hp.syscall_us + 0.5 * hp.blk_io_us,
             "guest: submit I/O + nvme SQ doorbell (mapped BAR, no exit)"),)
        self._blk_done_steps: tuple[Step, ...] = (
            (GUEST, 0.5 * hp.blk_io_us, "guest: block completion"),)
        self._wake_steps: tuple[Step, ...] = ((GUEST, hp.ctx_switch_us,
                                               "guest: wake application"),)
        # The guest's blk-mq maps its vCPUs onto the assigned device's queues, as natively.
        self.blk_queues = host.claim_disk_queues(vcpu.capacity)
        self._next_blk_queue = 0
        self.guest_nic = DrainLoop(host.env, f"{name}.vf-napi", self._guest_nic_batch,
                                   batch_limit=hp.napi_budget, on_wake=self._guest_irq,
                                   tracer=host.tracer)
        self.guest_blk = DrainLoop(host.env, f"{name}.nvme-irq", self._guest_blk_batch,
                                   batch_limit=hp.napi_budget, on_wake=self._guest_irq,
                                   tracer=host.tracer)

    # IOPath ------------------------------------------------------------------------------------
    def loops(self) -> list[DrainLoop]:
        """The guest's NAPI instances (the host's NIC queue and bridge are not on the path)."""
        return [self.guest_nic, self.guest_blk]

    def ring_stats(self) -> dict[str, tuple[int, int]]:
        """The device's rings are the hardware's own, not modelled as bounded queues."""
        return {}

    def receive(self, req: Request, nbytes: int) -> ProcessGenerator:
        """VF DMA -> MSI-X (delivery) -> guest stack -> wake the application -> ``recv``.

        ``nbytes == 0`` is a pure ACK: the guest's stack takes it; no application is woken.
        """
        host = self.host
        hp = host.params
        done = self.env.event()
        if self.guest_nic.push((RX, req, nbytes, done)):
            req.interrupts += 1
        yield done
        if not nbytes:
            return
        yield from host.cpu.run(self.vcpu, req, (
            (GUEST, hp.ctx_switch_us, "guest: wake application"),
            (GUEST, hp.syscall_us + host.copy_us(nbytes), "guest: recv syscall + copy"),
        ))

    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """``send`` syscall + copy + guest TCP/IP + tail write -> the VF's link -> peer.

        ``nbytes == 0`` is a pure ACK, without syscall or copy.
        """
        host = self.host
        hp = host.params
        segments = host.segments(nbytes, self.segment_bytes)
        yield from host.cpu.run(self.vcpu, req, (
            (GUEST, hp.syscall_us + host.copy_us(nbytes) if nbytes else 0.0,
             "guest: send syscall + copy"),
            (GUEST, segments * hp.stack_pkt_us,
             "guest: stack tx + VF tail write (mapped BAR, no exit)"),
        ))
        yield from host.transmit(req, nbytes, self.guest_nic)

    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """Syscall + block layer + doorbell -> device -> MSI-X -> completion -> wake."""
        host = self.host
        cpu = host.cpu
        yield from cpu.run(self.vcpu, req, self._blk_submit_steps)
        turn = self._next_blk_queue
        self._next_blk_queue = (turn + 1) % len(self.blk_queues)
        yield from host.disk.serve(req, nbytes, write, sequential, self.blk_queues[turn])
        done = self.env.event()
        if self.guest_blk.push((BLK_DONE, req, nbytes, done)):
            req.interrupts += 1
        yield done
        yield from cpu.run(self.vcpu, req, self._wake_steps)

    # Interrupt delivery --------------------------------------------------------------------------
    def _guest_irq(self, item: Any) -> ProcessGenerator:
        """One device interrupt: the host's VFIO handler (unless posted), then the guest's.

        Its CPU time and exits are charged to the request whose completion raised it.
        """
        req = item[1]
        cpu = self.host.cpu
        if self._host_irq_steps:
            yield from cpu.run(self.softirq, req, self._host_irq_steps)
        yield from self.wait_for_vcpu_thread()
        wake, wake_exits = self.vcpu_wake_steps()
        if wake:
            # Halted: the HLT exit stands for the injection exit (no "inject" reason).
            # Its time and the injection work are reported as exit time of no reason.
            count_exits(req, None, wake_exits, 0.0)
            steps: tuple[Step, ...] = (*((c, d, label) for c, d, label, _p in wake),
                                       *self._irq_halted)
        else:
            steps = self._irq_running
            if self.inject_exits:
                count_exits(req, EXIT_INJECT, 1, self._irq_running[0][1])
        if self.eoi_us > 0.0:
            count_exits(req, EXIT_EOI, self.eoi_exits, self.eoi_us)
        yield from cpu.run(self.vcpu, req, steps)

    def _guest_nic_batch(self, batch: list[Any]) -> ProcessGenerator:
        """The guest's NAPI poll: its stack per received segment.

        Transmit completions are reaped within the poll at no modelled extra cost (as natively).
        """
        host = self.host
        stack_pkt_us = host.params.stack_pkt_us
        for kind, req, nbytes, done in batch:
            if kind == RX:
                segments = host.segments(nbytes, self.segment_bytes)
                yield from host.cpu.run(self.vcpu, req, (
                    (GUEST, segments * stack_pkt_us, "guest: stack rx"),))
                done.succeed()

    def _guest_blk_batch(self, batch: list[Any]) -> ProcessGenerator:
        cpu = self.host.cpu
        steps = self._blk_done_steps
        for _kind, req, _nbytes, done in batch:
            yield from cpu.run(self.vcpu, req, steps)
            done.succeed()
