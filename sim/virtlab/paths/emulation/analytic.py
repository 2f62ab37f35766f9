"""The bill of one isolated request on the emulated path, computed from the parameters alone.

With one request in the system nothing waits, so its latency is the sum of the steps on its
critical path and its exits are what the access tables say. This module writes that sum out,
step by step, from a scenario's parameters, without running the model; the lab's check script
prints it next to a simulated run, and the tests compare the two.

Only the critical path is billed: the receive interrupt's refill and unmask, and the whole
transmit-completion interrupt, happen after the data has moved on (they cost CPU time and
exits, which :attr:`Bill.exits` counts, but no latency).

The guest is idle when the isolated request arrives, so the interrupt that brings its data
finds the vCPUs halted (:meth:`virtlab.paths.vm.VmPath.vcpu_wake_steps`): the HLT exit (an
exit of reason ``other``) and, once the vCPUs have been idle longer than ``halt_poll_us``, the
vCPU thread's wake latency and the host's switch to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtlab.compute import SYSCALL, compute_costs
from virtlab.config import Scenario
from virtlab.paths.emulation.accesses import Access
from virtlab.paths.emulation.exits import LEVEL_TRIGGERED
from virtlab.paths.vm import PH_VCPU_WAKEUP
from virtlab.records import PHASES
from virtlab.units import bytes_per_us_from_gbps, bytes_per_us_from_gbytes_per_s

__all__ = ["Line", "Bill", "transaction_bill", "disk_read_bill"]

_WAKEUP = PHASES[PH_VCPU_WAKEUP]


@dataclass(frozen=True)
class Line:
    """One step on the critical path: its latency phase, what it is, and its duration (µs)."""

    phase: str
    what: str
    us: float


@dataclass
class Bill:
    """The steps of one request and the exits it causes (by reason, and to user space).

    Reasons are those of :data:`virtlab.records.EXIT_REASONS`, and ``other`` (the HLT).
    """

    lines: list[Line] = field(default_factory=list)
    exits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("mmio", "pio", "inject", "eoi", "other"), 0))
    user_exits: int = 0

    @property
    def latency_us(self) -> float:
        """Sum of the steps."""
        return sum(line.us for line in self.lines)

    def add(self, phase: str, what: str, us: float) -> None:
        """Append a step (steps of zero duration are left out)."""
        if us > 0.0:
            self.lines.append(Line(phase, what, us))

    def by_phase(self) -> dict[str, float]:
        """Total duration per phase."""
        out: dict[str, float] = {}
        for line in self.lines:
            out[line.phase] = out.get(line.phase, 0.0) + line.us
        return out


class _Prices:
    def __init__(self, s: Scenario) -> None:
        h, hv, e = s.host, s.hypervisor, s.emulated
        cycles_per_us = h.cpu_ghz * 1000.0
        self.s = s
        self.kernel = hv.exit_kernel_cycles / cycles_per_us
        self.user = self.kernel * hv.user_exit_factor
        self.model = e.device_access_cycles / cycles_per_us
        self.posted = hv.posted_interrupts
        self.inject = 0.0 if self.posted else hv.irq_inject_cycles / cycles_per_us
        self.eoi = 1 if hv.eoi_exit and not self.posted else 0
        # PV EOI: no EOI exit for an MSI or edge-triggered interrupt (exits.LEVEL_TRIGGERED).
        self.msi_eoi = 0 if hv.pv_eoi else self.eoi
        # Xen HVM (exits.ExitCosts): the ioreq round trip to qemu-dm, its interrupt hypercall.
        self.xen_hvm = hv.vmm == "xen-hvm"
        hypercall = hv.hypercall_cycles / cycles_per_us
        self.ioreq = (2 * hv.xen_domain_switch_us + self.inject + h.ctx_switch_us
                      + 3 * h.syscall_us + hypercall) if self.xen_hvm else 0.0
        self.irq_raise = hypercall if self.xen_hvm else 0.0
        # The application's own system calls pay the compute-side surcharge (binary
        # translation: two VMM callouts each; virtlab.guestcalls), in the virt_compute phase.
        costs = compute_costs("emulated", h, hv)
        self.syscall_virt = costs.extra_us[SYSCALL]

    def syscall(self, bill: Bill, name: str) -> None:
        """The virtualization surcharge of one application system call (on the path)."""
        bill.add("virt_compute", f"{name}: syscall surcharge (binary translation: 2 VMM "
                                 "callouts)", self.syscall_virt)

    def copy(self, nbytes: int) -> float:
        return nbytes / bytes_per_us_from_gbytes_per_s(self.s.host.memcpy_gbytes_per_s)

    def frames(self, nbytes: int) -> int:
        return max(1, -(-nbytes // self.s.nic.payload_per_frame_bytes))

    def wire(self, nbytes: int) -> float:
        nic = self.s.nic
        wire_bytes = nbytes + self.frames(nbytes) * nic.frame_overhead_bytes
        return wire_bytes / bytes_per_us_from_gbps(nic.line_rate_gbps) + nic.wire_latency_us

    def accesses(self, bill: Bill, name: str, table: tuple[Access, ...], *,
                 on_path: bool = True) -> None:
        """Count the exits of ``table``; bill them if they are on the critical path."""
        e, hv = self.s.emulated, self.s.hypervisor
        for access in table:
            bill.exits[access.space] += 1
            model = self.model
            if access.handler == "hypervisor":
                cost, model, how = self.kernel, 0.0, "kernel exit (hypervisor)"
            elif self.xen_hvm:
                cost, how = self.kernel + self.ioreq, "ioreq round trip to qemu-dm in dom0"
                bill.user_exits += 1
            elif hv.coalesced_mmio and access.coalescible and access.space == "mmio":
                cost, how = self.kernel, "kernel exit (coalesced MMIO)"
            elif e.device_model_location == "kernel":
                cost, how = self.kernel, "kernel exit (in-kernel device model)"
            else:
                cost, how = self.user, "exit to the user-space device model"
                bill.user_exits += 1
            if on_path:
                bill.add("exits", f"{name}: {access.op} {access.register}, {how}", cost)
                bill.add("device_model", f"{name}: device model emulates {access.register}",
                         model)

    def vcpu_wake(self, bill: Bill, name: str, idle_us: float) -> None:
        """The interrupt finds the vCPUs halted for ``idle_us``: wake them (on the path)."""
        h, hv = self.s.host, self.s.hypervisor
        bill.exits["other"] += 1
        if self.xen_hvm:
            bill.add(_WAKEUP, f"{name}: HLT exit of the idle vCPU", self.kernel)
            bill.add(_WAKEUP, f"{name}: Xen schedules the blocked vCPU",
                     hv.xen_domain_switch_us)
            return
        asleep = idle_us > hv.halt_poll_us
        if asleep:
            bill.add(_WAKEUP, f"{name}: the sleeping vCPU thread's core wakes up",
                     hv.vcpu_wake_latency_us)
        bill.add(_WAKEUP, f"{name}: HLT exit of the idle vCPU", self.kernel)
        if asleep:
            bill.add(_WAKEUP, f"{name}: host switches to the vCPU thread (idle "
                              f"{idle_us:.1f} µs > halt polling {hv.halt_poll_us:g} µs)",
                     h.ctx_switch_us)

    def interrupt(self, bill: Bill, name: str, entry: tuple[Access, ...],
                  after: tuple[Access, ...], on_path: bool,
                  idle_us: float | None = None, *, level: bool = True) -> None:
        """One interrupt: injection, handler entry accesses, EOI; ``after`` is off the path.

        ``idle_us``: how long the vCPUs had been halted (None: one was running).
        """
        if idle_us is not None:
            self.vcpu_wake(bill, name, idle_us)
        bill.exits["inject"] += 0 if self.posted else 1
        eoi = self.eoi if level else self.msi_eoi
        bill.exits["eoi"] += eoi
        h = self.s.host
        if on_path:
            bill.add("interrupt", f"{name}: qemu-dm raises the line (hypercall)", self.irq_raise)
            bill.add("interrupt", f"{name}: inject the virtual interrupt", self.inject)
            bill.add("interrupt", f"{name}: guest interrupt entry", h.irq_us)
        self.accesses(bill, name, entry, on_path=on_path)
        if on_path:
            bill.add("interrupt", f"{name}: EOI exit", eoi * self.kernel)
        self.accesses(bill, name, after, on_path=False)


def transaction_bill(s: Scenario, request_bytes: int = 100, response_bytes: int = 200) -> Bill:
    """One request/response transaction on the emulated NIC, isolated (as in ``trace``).

    Assumes each message fits in one packet and one doorbell, the guest has at least two vCPUs
    (the application runs while the receive interrupt finishes its refill and unmask), the
    device model runs on the vCPU thread, and the vCPUs were idle when the request arrived.
    The transmit-done interrupt is raised during the vCPU's own doorbell exit (no HLT),
    unless QEMU's mitigation timer holds it past the transaction (then an HLT exit).
    """
    p, h, e = _Prices(s), s.host, s.emulated
    nic = e.nic
    copies = e.tap_copies + e.dma_copies
    bill = Bill()
    bill.add("outside", "peer builds the request", 0.5 * s.nic.peer_stack_us)
    bill.add("outside", "request on the wire", p.wire(request_bytes))
    bill.add("host_kernel", "host NIC interrupt", h.irq_us)
    bill.add("host_kernel", "host bridge + tap", h.bridge_pkt_us)
    bill.add("device_model", "wake the VMM's I/O thread", h.ctx_switch_us)
    bill.add("host_kernel", "tap read", p.frames(request_bytes) * h.syscall_us)
    bill.add("copies", "copies skb -> model -> guest buffer", copies * p.copy(request_bytes))
    bill.add("device_model", "device model receives the frame",
             p.frames(request_bytes) * e.rx_frame_cycles / (h.cpu_ghz * 1000.0))
    nic_level = e.nic_model in LEVEL_TRIGGERED
    rx_raised_us = bill.latency_us  # the receive interrupt's rising edge arms the timer
    p.interrupt(bill, "rx interrupt", nic.irq_entry, nic.rx_refill + nic.irq_exit, True,
                idle_us=bill.latency_us, level=nic_level)
    bill.add("guest", "guest stack rx", p.frames(request_bytes) * h.stack_pkt_us)
    bill.add("guest", "wake the application, recv + copy",
             h.ctx_switch_us + h.syscall_us + p.copy(request_bytes))
    p.syscall(bill, "recv")
    p.syscall(bill, "send")
    bill.add("guest", "send syscall + copy + stack tx",
             h.syscall_us + p.copy(response_bytes) + h.stack_pkt_us)
    p.accesses(bill, "tx doorbell", nic.tx_doorbell)
    frames = p.frames(response_bytes)
    bill.add("device_model", "device model transmits the frame",
             frames * e.tx_frame_cycles / (h.cpu_ghz * 1000.0))
    bill.add("copies", "copies guest -> model -> skb", copies * p.copy(response_bytes))
    bill.add("host_kernel", "tap write + bridge", frames * (h.syscall_us + h.bridge_pkt_us))
    # start_xmit raises transmit-done after the frame went to the tap (S100: set_ics).
    tx_raised_us = bill.latency_us
    bill.add("device", "response on the wire", p.wire(response_bytes))
    bill.add("outside", "peer receives the response", 0.5 * s.nic.peer_stack_us)
    p.interrupt(bill, "tx-done interrupt", nic.irq_entry, nic.irq_exit, False, level=nic_level)
    if 0.0 < tx_raised_us - rx_raised_us < e.irq_min_interval_us:
        # QEMU's mitigation (S100): the transmit-done edge comes while the timer the receive
        # interrupt armed still runs; it is delivered at the timer's expiry, when the vCPUs
        # have halted again: one more HLT exit, off the transaction's path.
        bill.exits["other"] += 1
    return bill


def disk_read_bill(s: Scenario, nbytes: int = 4096) -> Bill:
    """One disk read with deterministic service (``disk.service_cv = 0``), isolated."""
    p, h, e = _Prices(s), s.host, s.emulated
    disk = e.disk
    iothread = e.device_model_thread == "iothread"
    bill = Bill()
    p.syscall(bill, "read")
    bill.add("guest", "guest submit + block layer", h.syscall_us + 0.5 * h.blk_io_us)
    p.accesses(bill, "issue", disk.issue)
    if iothread:
        bill.add("device_model", "kick the I/O thread", h.syscall_us)
        vcpu_free_us = bill.latency_us   # the vCPU is idle from here to the interrupt
        bill.add("device_model", "wake the VMM's I/O thread", h.ctx_switch_us)
    bill.add("device_model", "device model decodes and submits",
             e.disk_command_cycles / (h.cpu_ghz * 1000.0))
    bill.add("host_kernel", "host AIO submit", h.syscall_us + 0.5 * h.blk_io_us)
    if not iothread:
        vcpu_free_us = bill.latency_us   # the submission ran on the vCPU thread
    access = s.disk.read_access_us if s.disk.kind == "flash" else 0.0
    bill.add("device", "device access + transfer",
             access + nbytes / (s.disk.interface_mbytes_per_s * 1e6 / 1e6))
    bill.add("device_model", "wake the VMM's I/O thread", h.ctx_switch_us)
    bill.add("host_kernel", "host AIO completion", 0.5 * h.blk_io_us)
    bill.add("copies", "device-model copies", e.disk_dma_copies * p.copy(nbytes))
    p.interrupt(bill, "completion interrupt", disk.irq_entry, disk.irq_exit, True,
                idle_us=bill.latency_us - vcpu_free_us,
                level=e.disk_controller in LEVEL_TRIGGERED)
    bill.add("guest", "guest block completion", 0.5 * h.blk_io_us)
    bill.add("guest", "wake the application", h.ctx_switch_us)
    return bill
