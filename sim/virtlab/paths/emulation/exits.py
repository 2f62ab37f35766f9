"""What each trapping access costs, and what one driver operation costs in exits.

An access traps into the hypervisor. Who emulates it decides the price:

* ``handler = "hypervisor"``: the hypervisor emulates it itself (KVM's in-kernel devices, a
  software VMM's callout): one kernel-handled exit, ``exit_kernel_cycles``;
* ``handler = "device-model"``: forwarded to the device model. With the model in user space
  (QEMU, VMware's VMApp) that is a heavy exit, ``exit_kernel_cycles * user_exit_factor``; with
  the model in the kernel, or for a coalescible MMIO write under coalesced MMIO (queued in a
  ring, replayed to the model at its next exit), a kernel-handled exit. Either way the device
  model then spends ``device_access_cycles`` on the register.

An interrupt adds, without APICv, one exit to force the injection (``irq_inject_cycles``
includes it) and one exit for the guest's EOI; with posted interrupts, neither (S30, S30b).

:class:`OperationCost` bundles the result for one operation so that the path charges a
precomputed block per operation instead of recomputing it per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtlab.cpu import Step
from virtlab.errors import ConfigError
from virtlab.host import Host
from virtlab.paths.emulation.accesses import Access
from virtlab.paths.emulation.phases import DEVICE_MODEL, EXITS, INTERRUPT, Part
from virtlab.records import BACKEND, EXIT, GUEST, Request
from virtlab.units import cycles_to_us

__all__ = ["MMIO", "PIO", "INJECT", "EOI", "LEVEL_TRIGGERED", "OperationCost", "ExitCosts",
           "combine"]

#: Built-in devices whose interrupt is a level-triggered PCI INTx, which the IOAPIC handles
#: (its EOI exits even under PV EOI, S74): QEMU's e1000 (82540EM) and pcnet have no MSI
#: capability. QEMU's ICH9 AHCI signals MSI (Linux ahci uses it) and the PIIX IDE controller in
#: legacy mode raises the edge-triggered ISA IRQ 14.
LEVEL_TRIGGERED = frozenset({"e1000", "pcnet32"})

#: Indexes into records.EXIT_REASONS.
MMIO, PIO, INJECT, EOI = range(4)


@dataclass(frozen=True, slots=True)
class OperationCost:
    """The exits of one driver operation: counts by reason, CPU steps and latency parts.

    ``steps`` are ready for :meth:`virtlab.cpu.Cpu.run`: one exit and one device-model step per
    access when ``detailed`` (traces show every access), otherwise one block of each.
    """

    name: str
    counts: tuple[int, int, int, int]
    reason_us: tuple[float, float, float, float]
    user_exits: int
    steps: tuple[Step, ...]
    parts: tuple[Part, ...]

    @property
    def exits(self) -> int:
        """Number of exits the operation takes."""
        return sum(self.counts)

    @property
    def total_us(self) -> float:
        """CPU time of the operation."""
        return sum(step[1] for step in self.steps)

    def count(self, req: Request) -> None:
        """Add the operation's exits (by reason, with their time) to ``req``."""
        counts = req.exit_counts
        times = req.exit_reason_us
        for index in range(4):
            counts[index] += self.counts[index]
            times[index] += self.reason_us[index]
        req.exits += sum(self.counts)
        req.exits_user += self.user_exits


class ExitCosts:
    """Prices accesses and interrupts for one run, from the host and the CPU support preset.

    Parameters
    ----------
    host:
        The host (its ``exit_kernel_us``, ``exit_user_us``, ``irq_inject_us``, ``eoi_exits``
        already follow the scenario's ``[hypervisor]`` table).
    device_access_cycles:
        Device-model work per register access forwarded to it, in cycles.
    model_in_kernel:
        The device model runs in the hypervisor kernel: its accesses are kernel-handled exits.
    detailed:
        Produce one step per access (for traces) instead of one block per operation.

    """

    def __init__(self, host: Host, device_access_cycles: float, model_in_kernel: bool,
                 detailed: bool) -> None:
        self.kernel_exit_us = host.exit_kernel_us
        self.user_exit_us = host.exit_user_us
        self.access_us = cycles_to_us(device_access_cycles, host.params.cpu_ghz)
        self.coalesced_mmio = bool(host.hypervisor.coalesced_mmio)
        self.model_in_kernel = model_in_kernel
        self.detailed = detailed
        self.inject_us = host.irq_inject_us
        self.inject_exits = 0 if host.hypervisor.posted_interrupts else 1
        self.eoi_exits = host.eoi_exits
        self.msi_eoi_exits = host.msi_eoi_exits
        hv = host.hypervisor
        self.xen_hvm = hv.vmm == "xen-hvm"
        #: Xen HVM (S72): an access for the device model is an ioreq round trip to qemu-dm in
        #: dom0, beyond the VM exit itself. Xen switches to dom0's vCPU and upcalls it; dom0's
        #: kernel wakes qemu-dm from its select(); qemu-dm reads the pending port and unmasks
        #: it (cpu_get_ioreq: two syscalls), emulates, and notifies back (xc_evtchn_notify: an
        #: ioctl making an EVTCHNOP_send hypercall); Xen switches back to the guest's vCPU.
        hp = host.params
        self.ioreq_round_trip_us = (2 * hv.xen_domain_switch_us + host.irq_inject_us
                                    + hp.ctx_switch_us + 3 * hp.syscall_us
                                    + host.hypercall_us) if self.xen_hvm else 0.0
        #: qemu-dm raises a device interrupt with a hypercall (set_pci_intx_level).
        self.irq_raise_us = host.hypercall_us if self.xen_hvm else 0.0
        if self.xen_hvm:
            # Xen buffers only the standard VGA's writes (hvm_buffered_io_intercept): a NIC's or
            # disk's register write always makes a synchronous round trip.
            self.coalesced_mmio = False
            if model_in_kernel:
                raise ConfigError("emulated.device_model_location",
                                  "Xen HVM emulates the NIC and disk in qemu-dm in dom0, not in "
                                  "the hypervisor: use 'user' with hypervisor.vmm = 'xen-hvm', "
                                  "got 'kernel'")

    def price(self, access: Access) -> tuple[float, float, bool, str]:
        """``(exit_us, device_model_us, reached_user_space, how)`` of one access."""
        if access.handler == "hypervisor":
            return self.kernel_exit_us, 0.0, False, "handled by the hypervisor"
        if self.coalesced_mmio and access.coalescible and access.space == "mmio":
            return self.kernel_exit_us, self.access_us, False, "coalesced MMIO: queued in kernel"
        if self.model_in_kernel:
            return self.kernel_exit_us, self.access_us, False, "in-kernel device model"
        if self.xen_hvm:
            return (self.kernel_exit_us + self.ioreq_round_trip_us, self.access_us, True,
                    "ioreq page + event channel to qemu-dm in dom0 and back")
        return self.user_exit_us, self.access_us, True, "exit to the user-space device model"

    def operation(self, name: str, accesses: tuple[Access, ...], repeat: int = 1
                  ) -> OperationCost:
        """The cost of performing ``accesses`` ``repeat`` times (e.g. one TDT per burst)."""
        counts = [0, 0, 0, 0]
        reason_us = [0.0, 0.0, 0.0, 0.0]
        user = 0
        exit_total = model_total = 0.0
        steps: list[Step] = []
        for access in accesses:
            exit_us, model_us, to_user, how = self.price(access)
            reason = MMIO if access.space == "mmio" else PIO
            counts[reason] += repeat
            reason_us[reason] += repeat * exit_us
            user += repeat if to_user else 0
            exit_total += repeat * exit_us
            model_total += repeat * model_us
            if self.detailed:
                times = f" x{repeat}" if repeat != 1 else ""
                steps.append((EXIT, repeat * exit_us,
                              f"{name}: {access.space.upper()} {access.op} {access.register}"
                              f"{times} -> exit, {how}"))
                steps.append((BACKEND, repeat * model_us,
                              f"device model: {access.register} {access.op}"))
        if not self.detailed and accesses:
            total = sum(counts)
            steps = [(EXIT, exit_total, f"{name}: {total} exits"),
                     (BACKEND, model_total, f"device model: {name} registers")]
        return OperationCost(name, (counts[0], counts[1], counts[2], counts[3]),
                             (reason_us[0], reason_us[1], reason_us[2], reason_us[3]), user,
                             tuple(s for s in steps if s[1] > 0.0),
                             ((EXITS, exit_total), (DEVICE_MODEL, model_total)))

    def injection(self, irq_us: float) -> OperationCost:
        """A virtual interrupt arrives: injection (unless posted) and the guest's entry."""
        inject_us = self.inject_us if self.inject_exits else 0.0
        steps: list[Step] = []
        if self.irq_raise_us > 0.0:
            steps.append((BACKEND, self.irq_raise_us,
                          "qemu-dm: set_pci_intx_level hypercall (raise the line)"))
        if inject_us > 0.0:
            steps.append((EXIT, inject_us, "inject virtual interrupt (exit + injection)"))
        steps.append((GUEST, irq_us, "guest: interrupt entry"))
        return OperationCost("injection", (0, 0, self.inject_exits, 0), (0.0, 0.0, inject_us, 0.0),
                             0, tuple(s for s in steps if s[1] > 0.0),
                             ((INTERRUPT, self.irq_raise_us + inject_us + irq_us),))

    def eoi(self, level: bool = True) -> OperationCost:
        """The guest acknowledges the interrupt at its APIC.

        That is an exit unless the APIC is virtualized or, for an MSI or edge-triggered
        interrupt (``level`` false), PV EOI is on (S74).
        """
        exits = self.eoi_exits if level else self.msi_eoi_exits
        eoi_us = exits * self.kernel_exit_us
        steps: tuple[Step, ...] = ((EXIT, eoi_us, "guest EOI write -> exit"),) if eoi_us else ()
        return OperationCost("eoi", (0, 0, 0, exits), (0.0, 0.0, 0.0, eoi_us), 0,
                             steps, ((INTERRUPT, eoi_us),))


def combine(name: str, *operations: OperationCost) -> OperationCost:
    """One operation doing ``operations`` back to back (steps, counts and parts added up)."""
    counts = tuple(sum(op.counts[i] for op in operations) for i in range(4))
    reason_us = tuple(sum(op.reason_us[i] for op in operations) for i in range(4))
    merged: dict[int, float] = {}
    for op in operations:
        for phase, duration_us in op.parts:
            merged[phase] = merged.get(phase, 0.0) + duration_us
    return OperationCost(name, counts, reason_us,  # type: ignore[arg-type]
                         sum(op.user_exits for op in operations),
                         tuple(step for op in operations for step in op.steps),
                         tuple(merged.items()))
