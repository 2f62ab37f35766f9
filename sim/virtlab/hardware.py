"""Parameters of the physical host: CPU, NIC and disk, and the hypervisor's CPU support.

Sources (keys as in ``docs/parameters.md``): S161 (one basis for exit costs: a hardware round
trip plus the hypervisor's handling), S23 (VM exit cost), S24 (hypercall), S25 (IPI /
injection), S26 (user-space exit ratio), S30/S30b (EOI exits, APICv), S32 (syscall), S33
(context switch), S34 (memcpy bandwidth), S44 (KVM halt polling), S210 (network stack per
packet), F14 (Felter et al. 2014 testbed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from virtlab.cpusupport import (
    DEFAULT_PRESET,
    DERIVED_FIELDS,
    PRESET_FIELDS,
    PRESET_NAMES,
    cpu_support,
)
from virtlab.errors import ConfigError
from virtlab.params import Params, param

__all__ = ["HostParams", "NicParams", "DiskParams", "HypervisorParams", "release_dependents"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HostParams(Params):
    """The host's cores and the host kernel's per-operation costs."""

    section = "host"

    cores: int = param(8, source="assumption (a mid-size server socket)", lo=1, hi=1024,
                       doc="Physical cores that run vCPUs, backends and host-kernel work.")
    cpu_ghz: float = param(3.0, unit="GHz", source="assumption (a round server clock)",
                           lo=0.1, hi=10.0, doc="Clock used to convert cycle costs to µs.")
    memcpy_gbytes_per_s: float = param(10.0, unit="GB/s", source="S34 (9.2-13.4 GB/s)", lo=0.01,
                                       hi=1000.0, doc="Single-core copy bandwidth.")
    syscall_us: float = param(0.05, unit="µs", source="S32 (lmbench null syscall)", lo=0.0,
                              hi=100.0, doc="Cost of entering and leaving the kernel once.")
    ctx_switch_us: float = param(2.0, unit="µs", source="S33 (1.9-6.7 µs per switch)", lo=0.0,
                                 hi=1000.0, doc="Waking a blocked thread and switching to it.")
    irq_us: float = param(1.0, unit="µs", source="assumption", lo=0.0, hi=1000.0,
                          doc="Hard interrupt plus softirq entry on the host, per interrupt.")
    stack_pkt_us: float = param(
        0.85, unit="µs", lo=0.0, hi=1000.0,
        source="S210 (Linux 3.8 network stack per packet: 1.26 µs in, 1.05 µs out at "
               "2.2 GHz = 2,772 and 2,310 cycles; their mean, 2,541 cycles, at the default "
               "3.0 GHz); S180 (Clark et al. 1989: TCP's common path is under 200 "
               "instructions, so a UDP measurement stands for TCP's fast path)",
        doc="TCP/IP processing per segment per direction in one kernel (host or guest): "
            "driver, IP, transport and socket queueing, without the copy, the wake-up and "
            "the system call (charged separately). A value measured in cycles: profiles "
            "with another cpu_ghz set it too.")
    bridge_pkt_us: float = param(1.0, unit="µs", source="assumption", lo=0.0, hi=1000.0,
                                 doc="Host bridge and tap forwarding per packet for VM traffic.")
    blk_io_us: float = param(4.0, unit="µs", source="assumption", lo=0.0, hi=1000.0,
                             doc="Block layer and driver per I/O in one kernel (submit + "
                                 "complete).")
    napi_budget: int = param(64, source="S43 (NAPI_POLL_WEIGHT)", lo=1, hi=4096,
                             doc="Packets or completions handled per poll before yielding.")


@dataclass(frozen=True, slots=True, kw_only=True)
class NicParams(Params):
    """The physical NIC and the wire to the peer that runs the other end of each workload."""

    section = "nic"

    line_rate_gbps: float = param(10.0, unit="Gbit/s", source="F14 (10 GbE testbed)", lo=0.001,
                                  hi=1000.0, doc="Line rate of the link, each direction.")
    mtu_bytes: int = param(1500, unit="bytes", lo=68, hi=65536,
                           source="F14 (MTU 1500); range: RFC 791 (every IPv4 module takes "
                                  "68 bytes) to 64 KiB",
                           doc="IP MTU; sets the payload per wire frame (it must exceed "
                               "tcp_ip_header_bytes).")
    frame_overhead_bytes: int = param(
        90, unit="bytes", lo=0, hi=1000,
        source="derived: preamble 8 + Ethernet 14 + FCS 4 + gap 12 + IP 20 + TCP 32; "
               "gives the 9.41 Gb/s goodput limit quoted in F14",
        doc="Wire bytes per frame beyond its TCP payload.")
    tcp_ip_header_bytes: int = param(52, unit="bytes", source="IP 20 + TCP 20 + timestamps 12",
                                     lo=0, hi=1000, doc="Headers inside the MTU.")
    tso_bytes: int = param(65536, unit="bytes", source="assumption (Linux GSO limit, 64 KiB)",
                           lo=1, hi=1 << 20,
                           doc="Largest segment the stack hands to a device with offload.")
    ack_every_segments: int = param(
        2, lo=1, hi=1 << 16,
        source="S65 (RFC 1122 4.2.3.2; Linux __tcp_ack_snd_check: an ACK at once once more "
               "than one full-sized segment is unacknowledged)",
        doc="A TCP receiver acknowledges every this many packets its stack sees (a GRO'd "
            "burst of up to tso_bytes is one): data one way, pure ACKs the other.")
    queues: int = param(
        1, lo=1, hi=64,
        source="S67 (RSS: Linux Documentation/networking/scaling.rst; the default "
               "indirection table, ethtool_rxfh_indir_default: entry i -> queue i % queues)",
        doc="Receive queues of the host's NIC (and of an assigned device) with receive-side "
            "scaling: a connection's hash picks its queue, and each queue's interrupt and NAPI "
            "poll run on their own CPU. Native, container and passthrough paths; the "
            "paravirtual and emulated NICs have one queue.")
    wire_latency_us: float = param(3.0, unit="µs", source="assumption (PHY, PCIe and cable)",
                                   lo=0.0, hi=1e6, doc="One-way latency of the link.")
    peer_stack_us: float = param(
        4.8, unit="µs", lo=0.0, hi=1e6,
        source="derived: the peer is a native host of the default [host]: irq_us 1 + two "
               "stack passes 2 x stack_pkt_us 0.85 (S210) + one wake-up ctx_switch_us 2 (S33) "
               "+ two syscalls 2 x 0.05 (S32); S210's idle-receiver Linux total, 6.19 µs at "
               "2.2 GHz (4.5 µs at 3.0 GHz), agrees",
        doc="Time the remote peer needs to receive a response and send the next request "
            "(a native host blocked in recv: interrupt, stack rx, wake-up, read, write, "
            "stack tx). Profiles that change the host's costs derive their own.")

    @property
    def payload_per_frame_bytes(self) -> int:
        """TCP payload carried by one MTU-sized frame."""
        return self.mtu_bytes - self.tcp_ip_header_bytes

    def check(self) -> None:
        """The MTU must leave room for a payload after the IP and TCP headers."""
        if self.payload_per_frame_bytes <= 0:
            raise ConfigError("mtu_bytes", "must exceed tcp_ip_header_bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskParams(Params):
    """A flash (NVMe-like) device with internal parallelism, or a rotating disk.

    Service of one I/O: the command is fetched from its hardware submission queue (each of the
    ``queues`` queue pairs takes at most ``queue_iops`` commands per second), then an access
    phase on one of ``channels`` (flash: ``*_access_us`` with the given coefficient of
    variation; rotating: seek + rotation), then the transfer through the shared interface at
    ``interface_mbytes_per_s`` (first come, first served). The fetch overlaps the access of
    earlier commands and is part of the access time of a lone command, so a device that no
    queue limits behaves exactly as ``channels`` servers followed by the interface.
    """

    section = "disk"

    kind: str = param("flash", source="assumption", choices=("flash", "rotating"),
                      doc="Device type.")
    channels: int = param(32, source="assumption (NVMe-class internal parallelism)", lo=1,
                          hi=4096, doc="I/Os the device can serve at once (rotating: 1).")
    read_access_us: float = param(80.0, unit="µs", source="assumption (NVMe 4 KiB read)",
                                  lo=0.0, hi=1e7, doc="Mean access time of a read.")
    write_access_us: float = param(25.0, unit="µs", source="assumption (write cache)", lo=0.0,
                                   hi=1e7, doc="Mean access time of a write.")
    service_cv: float = param(
        0.3, source="assumption", lo=0.0, hi=10.0,
        doc="Coefficient of variation of the access time: 0 deterministic, 1 exponential, "
            "otherwise gamma.")
    interface_mbytes_per_s: float = param(3000.0, unit="MB/s", source="assumption (PCIe 3 x4)",
                                          lo=0.001, hi=1e6,
                                          doc="Transfer rate of the shared interface.")
    queues: int = param(
        64, lo=1, hi=65535,
        source="S64 (Linux nvme_max_io_queues asks one I/O queue pair per possible CPU, the "
               "controller grants up to 65,535); 64: assumption for a data-center controller",
        doc="Hardware submission/completion queue pairs; the block layer maps each CPU to one "
            "(blk_mq_map_queues), so a submitter uses min(queues, its CPUs) of them.")
    queue_iops: float = param(
        1_000_000.0, unit="1/s", lo=0.0, hi=1e9,
        source="assumption (no public per-queue command rate found; of the order of a current "
               "NVMe drive's 4 KiB random-read IOPS); 0 = no per-queue limit",
        doc="Commands one hardware queue can pass to the device per second (0: unlimited).")
    seek_us: float = param(4000.0, unit="µs", source="assumption (10k rpm class)", lo=0.0,
                           hi=1e7, doc="Mean random seek of a rotating disk.")
    rpm: float = param(10000.0, unit="rev/min", source="B03 (10k rpm SCSI)",
                       lo=1.0, hi=1e5, doc="Spindle speed of a rotating disk.")


@dataclass(frozen=True, slots=True, kw_only=True)
class HypervisorParams(Params):
    """What the CPU's virtualization support costs, and how the hypervisor wakes idle vCPUs.

    Used by both virtual-machine paths (emulated and paravirtual). ``cpu_support`` names a
    preset (:mod:`virtlab.cpusupport`); every cost that is left unset (``None``) takes the
    preset's value when the table is built, and a value set explicitly wins over the preset.
    After construction every field holds its effective value.

    ``halt_poll_us`` and ``vcpu_wake_latency_us`` describe a KVM-style hypervisor, where a vCPU
    is a host thread: an idle vCPU exits on HLT, polls, then its thread sleeps
    (:meth:`virtlab.paths.vm.VmPath.vcpu_wake_steps`). They are not preset fields: halt polling
    is a property of the host kernel, not of the CPU. Xen schedules a blocked vCPU instead
    (``xen_domain_switch_us``, on the Xen paravirtual path and under ``vmm = "xen-hvm"``).
    """

    section = "hypervisor"

    cpu_support: str = param(DEFAULT_PRESET, choices=PRESET_NAMES,
                             source="virtlab.cpusupport (each preset cites its sources)",
                             doc="CPU virtualization support preset; fills the unset costs "
                                 "below.")
    exit_roundtrip_cycles: float = param(
        None, unit="cycles", lo=0.0, hi=1e7,
        source="preset; S162, AA06 (hardware round trips measured alone); S161",
        doc="The hardware's VM exit + VM entry (binary translation: the VMM callout), without "
            "the hypervisor's handling; every exit cost below is this plus a handling term.")
    exit_handling_cycles: float = param(
        None, unit="cycles", lo=0.0, hi=1e7,
        source="preset; S161 (derived: S23 or S28 minus the round trip of their CPU)",
        doc="The hypervisor's handling of a simple exit it handles itself (dispatch, emulate "
            "CPUID or an ioeventfd write, prepare the entry).")
    hypercall_handling_cycles: float = param(
        None, unit="cycles", lo=0.0, hi=1e7,
        source="preset; S161 (derived: exit_handling_cycles + S24 - S23)",
        doc="The hypervisor's handling of a hypercall.")
    inject_handling_cycles: float = param(
        None, unit="cycles", lo=0.0, hi=1e7,
        source="preset; S161 (derived: exit_handling_cycles + S25 - S23)",
        doc="The hypervisor's work to deliver a virtual interrupt, beyond the round trip of "
            "the exit that forces it.")
    exit_kernel_cycles: float = param(None, unit="cycles", lo=0.0, hi=1e7,
                                      source="derived: exit_roundtrip_cycles + "
                                             "exit_handling_cycles (modern: S23)",
                                      doc="VM exit and re-entry handled in the hypervisor kernel "
                                          "(unset: round trip + handling).")
    user_exit_factor: float = param(None, source="preset; modern: S26 (nested ratio), assumption",
                                    lo=1.0, hi=100.0, doc="A user-space (QEMU) exit costs this "
                                                          "many kernel exits.")
    hypercall_cycles: float = param(None, unit="cycles", lo=0.0, hi=1e7,
                                    source="derived: exit_roundtrip_cycles + "
                                           "hypercall_handling_cycles (modern: S24)",
                                    doc="Hypercall round trip (unset: round trip + handling).")
    irq_inject_cycles: float = param(None, unit="cycles", lo=0.0, hi=1e7,
                                     source="derived: exit_roundtrip_cycles + "
                                            "inject_handling_cycles (modern: S25)",
                                     doc="Delivering one virtual interrupt, with the exit that "
                                         "forces it (unset: round trip + handling).")
    eoi_exit: bool = param(None, source="preset; S30",
                           doc="The guest's EOI write traps (no PV-EOI).")
    posted_interrupts: bool = param(
        None, source="preset; S30b",
        doc="APICv posted interrupts: no injection work and no EOI exit.")
    coalesced_mmio: bool = param(
        None, source="preset; QEMU/KVM coalesced MMIO (S21)",
        doc="Side-effect-free MMIO writes are queued in the kernel instead of exiting to the "
            "user-space device model.")
    kind: str = param(
        "bare-metal", choices=("bare-metal", "hosted"),
        source="SU01 (VMware Workstation's hosted VMM switches worlds to the host OS for every "
               "host interrupt and to run its user-level VMApp)",
        doc="'hosted': a monitor beside a host OS (Workstation-style): the emulated path pays a "
            "world switch (exit_user - exit_kernel) for each host interrupt taken while the "
            "guest runs and for each I/O its user-level device model completes. 'bare-metal' "
            "(KVM, Xen): neither.")
    pv_eoi: bool = param(
        False,
        source="S74 (KVM PV EOI: Linux guests since 3.6; lapic.c apic_sync_pv_eoi_to_guest "
               "refuses it for vectors the IOAPIC handles)",
        doc="The guest acknowledges interrupts through KVM's paravirtual EOI: the EOI of an "
            "MSI (virtio, passthrough, AHCI) or of an edge-triggered legacy interrupt (IDE) "
            "does not exit; a level-triggered PCI INTx (e1000, pcnet32) still does. Off by "
            "default (the model's EOI exits as before); on for a Linux >= 3.6 guest on KVM.")
    vmm: str = param(
        "kvm", choices=("kvm", "xen-hvm"),
        source="S72 (Xen HVM: hvm_send_ioreq, QEMU cpu_handle_ioreq / xc_evtchn_notify)",
        doc="Which hypervisor runs a fully virtualized (emulated) guest. 'kvm': an access for "
            "the device model exits to KVM, which returns to QEMU on the same thread "
            "(exit_user = user_exit_factor x exit_kernel). 'xen-hvm': Xen writes the request "
            "to the shared ioreq page and signals qemu-dm in dom0 through an event channel; "
            "dom0 must be scheduled and qemu-dm woken, and it answers the same way. Xen also "
            "schedules a halted vCPU back instead of KVM's halt polling and thread wake-up.")
    xen_domain_switch_us: float = param(
        2.0, unit="µs", lo=0.0, hi=1e4, source="assumption",
        doc="Xen schedules a blocked domain's vCPU to deliver an event: the driver domain or "
            "the guest on the Xen paravirtual path (paravirtual.backend = 'xen'); dom0 for "
            "qemu-dm and the HVM guest's vCPU back under vmm = 'xen-hvm'.")
    # Idle vCPUs (KVM) ------------------------------------------------------------------------
    halt_poll_us: float = param(200.0, unit="µs", lo=0.0, hi=1e6,
                                source="S44 (KVM_HALT_POLL_NS_DEFAULT 200,000 ns)",
                                doc="A vCPU that exited on HLT polls this long for an interrupt "
                                    "before its thread sleeps; 0 = sleep at once (KVM before "
                                    "Linux 4.0).")
    vcpu_wake_latency_us: float = param(
        0.0, unit="µs", lo=0.0, hi=1e6,
        source="assumption (0: the vCPU thread's core is awake; an idle core first takes the "
               "IPI and leaves its idle state)",
        doc="Delay, not CPU time, before a sleeping vCPU thread that an interrupt woke runs.")

    def __post_init__(self) -> None:
        # Fill the unset costs from the preset before the usual validation sees them.
        preset = cpu_support(self.cpu_support) if isinstance(self.cpu_support, str) else None
        if preset is not None:
            for name in PRESET_FIELDS:
                if getattr(self, name) is None:
                    object.__setattr__(self, name, getattr(preset, name))
            # One basis (virtlab.cpusupport): each exit cost is the round trip plus its
            # handling, from the effective terms (a --set round trip moves all three).
            roundtrip = self.exit_roundtrip_cycles
            for name, handling in DERIVED_FIELDS.items():
                part = getattr(self, handling)
                if (getattr(self, name) is None and isinstance(roundtrip, (int, float))
                        and isinstance(part, (int, float))):
                    object.__setattr__(self, name, float(roundtrip) + float(part))
        Params.__post_init__(self)
        if self.vmm == "xen-hvm" and self.kind == "hosted":
            raise ConfigError("kind", "Xen is a bare-metal hypervisor: vmm = 'xen-hvm' needs "
                                      "kind = 'bare-metal', got 'hosted'")
        if self.vmm == "xen-hvm" and self.cpu_support == "binary-translation":
            # Xen runs an unmodified (HVM) guest only on VT-x or AMD-V (S160: hvm_enable);
            # binary translation is VMware's software technique, not Xen's.
            raise ConfigError("cpu_support", "Xen HVM needs hardware virtualization (VT-x or "
                                             "AMD-V): vmm = 'xen-hvm' needs a hardware preset, "
                                             "got 'binary-translation'")


def release_dependents(table: Mapping[str, Any], changed: Iterable[str]) -> dict[str, Any]:
    """A ``[hypervisor]`` table whose values derived from a ``changed`` field are unset again.

    ``table`` holds *effective* values (``HypervisorParams.to_dict()``: what a preset filled
    and what was derived are written out like explicit values). Before a field is reassigned
    (a sweep's ``--vary hypervisor.cpu_support=...``), the values that came from the old
    preset or derivation must go, or they would pin the old costs: a field filled by the preset
    is dropped when ``cpu_support`` changes and it still holds the old preset's value; a
    derived cost is dropped when one of its terms changes and it still equals the old round
    trip plus handling. Values that differ (set on purpose) are kept and still win.
    """
    out = dict(table)
    changed = set(changed)
    preset_name = table.get("cpu_support")
    if "cpu_support" in changed and isinstance(preset_name, str) and preset_name in PRESET_NAMES:
        preset = cpu_support(preset_name)
        for name in PRESET_FIELDS:
            if name not in changed and out.get(name) == getattr(preset, name):
                out.pop(name, None)
    roundtrip = table.get("exit_roundtrip_cycles")
    for name, handling in DERIVED_FIELDS.items():
        terms = {"cpu_support", "exit_roundtrip_cycles", handling}
        part = table.get(handling)
        if (name not in changed and changed & terms and isinstance(roundtrip, (int, float))
                and isinstance(part, (int, float)) and table.get(name) == roundtrip + part):
            out.pop(name, None)
    return out
