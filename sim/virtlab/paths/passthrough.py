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
above) -> block-layer completion -> the application is woken. That flow is the native one,
:class:`~virtlab.paths.kernelstack.KernelStack`, run by the guest kernel; this module adds only
how the device's interrupts reach the guest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext, Step
from virtlab.host import Host
from virtlab.params import Params
from virtlab.paths.kernelstack import KernelStack, StackIO, StackLabels
from virtlab.paths.pvcommon import EXIT_EOI, EXIT_INJECT, count_exits
from virtlab.paths.vm import VmPath
from virtlab.records import EXIT, GUEST, HOST

__all__ = ["PassthroughPath", "PassthroughParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PassthroughParams(Params):
    """Device assignment has no costs of its own.

    The guest kernel's work is priced by ``[host]`` (the same kernel costs as natively) and its
    interrupts by ``[hypervisor]``.
    """

    section = "passthrough"


class PassthroughPath(StackIO, VmPath):
    """A guest driving an assigned device (SR-IOV VF or VFIO) with its own kernel's driver.

    Components: ``vcpu`` (the guest's vCPUs, which run the driver, the stack and the
    application), ``stack`` (the guest kernel's stack and block layer, run on the vCPUs) with
    its NAPI instances ``guest_nic`` and ``guest_blk`` (one interrupt wakes each; completions
    arriving while it polls are taken without another), and the host context ``softirq`` that
    runs VFIO's MSI handler when interrupts are not posted. The host's own NIC queue and bridge
    (``host_nic`` of :class:`~virtlab.paths.vm.VmPath`) are not used.

    Invariants: no step of the data path is an exit; every delivered device interrupt costs
    exactly ``inject_exits + eoi_exits`` counted exits on a running vCPU and ``1 + eoi_exits``
    (the HLT) on a halted one, where ``inject_exits`` is 0 with posted interrupts and 1
    without.
    """

    approach: ClassVar[str] = "passthrough"
    #: What the guest kernel's steps are called (the doorbells are writes to mapped BARs).
    labels: ClassVar[StackLabels] = StackLabels(
        wake="guest: wake application", recv="guest: recv syscall + copy",
        send="guest: send syscall + copy",
        stack_tx="guest: stack tx + VF tail write (mapped BAR, no exit)",
        stack_rx="guest: stack rx",
        submit="guest: submit I/O + nvme SQ doorbell (mapped BAR, no exit)",
        blk_done="guest: block completion")

    def __init__(self, host: Host, name: str, vcpu: ExecContext,
                 params: Params | None = None) -> None:
        super().__init__(host, name, vcpu)
        self.params = params if params is not None else PassthroughParams()
        hp = host.params
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
        # The guest kernel runs the native flow on its vCPUs; its blk-mq maps them onto the
        # assigned device's queues, as natively.
        self.stack = KernelStack(
            host, vcpu, vcpu, GUEST, self.labels, nic_scope=f"{name}.vf-napi",
            blk_scope=f"{name}.nvme-irq", on_nic_irq=self._guest_irq,
            on_blk_irq=self._guest_irq, syscall_us=hp.syscall_us,
            # The VF's receive queues (RSS): each interrupts the guest, whose NAPI runs on
            # its vCPUs, like queue 0.
            nic_queues=[(vcpu, self._guest_irq)] * (host.nic_params.queues - 1))
        self.guest_nic = self.stack.nic
        self.guest_blk = self.stack.blk

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
