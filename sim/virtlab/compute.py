"""What virtualization costs an application's own compute: five events, priced per approach.

A server's CPU work is described by how many of five events it causes (system calls, page
faults, context switches, TLB misses, timer interrupts or IPIs) on top of plain user-space
work. Each event has a **native cost** (what the kernel that serves it spends) and, in a
virtual machine, a **virtualization surcharge** that depends on how the CPU is virtualized
(:data:`virtlab.cpusupport.PAGING`): binary translation with shadow page tables, hardware
VT-x with shadow page tables, or nested paging (EPT/NPT). Native and containers pay no
surcharge: a container's syscalls and faults are the host kernel's own.

Native cost of each event (µs; the kernel of the approach: the host for native and
containers, the guest for virtual machines):

=================  ========================================================================
syscall            ``host.syscall_us`` [S32, lmbench null syscall]
page_fault         one kernel entry (``syscall_us``) + zeroing a 4 KiB page at memory-copy
                   bandwidth (``host.memcpy_gbytes_per_s``) [derived: S32, S34]
context_switch     ``host.ctx_switch_us`` [S33, perf bench sched pipe]
tlb_miss           a one-dimensional 4-level walk: 4 references x ``WALK_REF_CYCLES``
timer              ``host.irq_us`` (a local interrupt and its handler entry)
=================  ========================================================================

Surcharge in a virtual machine (cycles at ``host.cpu_ghz``; ``exit`` is the preset's or the
scenario's ``hypervisor.exit_kernel_cycles``):

=================  ===================================================  ==================
event              shadow page tables (BT or VT-x)                      nested paging
=================  ===================================================  ==================
syscall            BT: 2 VMM callouts (entry, return; not counted as    0
                   exits); VT-x: 0
page_fault         3 x (exit + shadow work): the fault traps, the        0 (the guest
                   guest's PTE write traps, the hidden fill fault        handles it alone)
context_switch     1 x (exit + shadow work): the CR3 write traps          0
tlb_miss           0 (the shadow table is walked in one dimension)      (refs - 4) x
                                                                        ``WALK_REF_CYCLES``
timer              the injection, which includes the exit that forces it (``irq_inject_cycles``;
                   S25's IPI round trip on modern CPUs), + the EOI exit; with posted
                   interrupts (APICv) only the exit that arms the deadline or sends the IPI
=================  ===================================================  ==================

The exit counts come from the mechanism, not from a measured total: under shadow paging the
VMM write-protects the guest's page tables, so a guest PTE write traps and is emulated (KVM:
``kvm_mmu_track_write`` in ``arch/x86/kvm/mmu/mmu.c``), and the shadow entry is filled by a
further ("hidden") fault (``FNAME(page_fault)`` in ``arch/x86/kvm/mmu/paging_tmpl.h``); the
same structure is described for VMware's VMM by Adams & Agesen [AA06]. The shadow work per
exit and the cost of one page-walk reference are assumptions (docs/sources.md,
"Compute-side costs"). The I/O path's own ``recv``, ``send`` and block ``read``/``write``
system calls are priced natively by the path; :mod:`virtlab.guestcalls` adds this module's
syscall surcharge to each of them, so every guest system call pays it exactly once. Every
surcharge is reported in the ``virt_compute`` latency phase (:data:`virtlab.records.PHASES`).
"""

from __future__ import annotations

from dataclasses import dataclass

from virtlab.cpusupport import PAGING
from virtlab.hardware import HostParams, HypervisorParams
from virtlab.units import bytes_per_us_from_gbytes_per_s, cycles_to_us

__all__ = ["EVENTS", "SYSCALL", "PAGE_FAULT", "CONTEXT_SWITCH", "TLB_MISS", "TIMER",
           "ComputeCosts", "compute_costs", "WALK_REF_CYCLES", "SHADOW_WORK_CYCLES",
           "SHADOW_FAULT_EXITS", "NATIVE_WALK_REFS", "PAGE_BYTES", "cost_table_markdown",
           "xen_pv_costs_cycles"]

#: The five events, in the order of every per-event tuple of this module.
EVENTS = ("syscall", "page_fault", "context_switch", "tlb_miss", "timer")
SYSCALL, PAGE_FAULT, CONTEXT_SWITCH, TLB_MISS, TIMER = range(5)

#: One page-walk memory reference, cycles [assumption: walk references mostly hit the L2 cache
#: and the paging-structure caches; Intel's optimization manual gives ~12-14 cycles of L2
#: latency on recent cores].
WALK_REF_CYCLES = 10.0
#: References of a native 4-level walk [Intel SDM vol. 3, 4-level paging].
NATIVE_WALK_REFS = 4
#: VMM work per shadow-paging exit beyond the exit itself, cycles (walk the guest's table,
#: update or look up the shadow) [assumption].
SHADOW_WORK_CYCLES = 1000.0
#: Traps per guest page fault under shadow paging: the fault, the guest's PTE write, the hidden
#: fault that fills the shadow entry [mechanism: AA06; KVM mmu.c, paging_tmpl.h].
SHADOW_FAULT_EXITS = 3
#: Bytes of one page (zeroed on a fresh anonymous fault).
PAGE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ComputeCosts:
    """Per-event costs for one approach on one host and hypervisor.

    Invariants: every tuple has one entry per event of :data:`EVENTS`; ``extra_us`` and
    ``extra_exits`` are all zero for native and containers; all values are >= 0.
    """

    approach: str
    paging: str
    native_us: tuple[float, ...]
    extra_us: tuple[float, ...]
    extra_exits: tuple[int, ...]
    #: Per event, what the surcharge is, for traces ("" when there is none).
    why: tuple[str, ...] = ("",) * 5

    def cost_us(self, event: int) -> float:
        """Total cost of one ``event`` (native plus surcharge)."""
        return self.native_us[event] + self.extra_us[event]


def native_costs_us(host: HostParams) -> tuple[float, ...]:
    """What each event costs the kernel that serves it, without virtualization."""
    zero_page_us = PAGE_BYTES / bytes_per_us_from_gbytes_per_s(host.memcpy_gbytes_per_s)
    return (host.syscall_us, host.syscall_us + zero_page_us, host.ctx_switch_us,
            cycles_to_us(NATIVE_WALK_REFS * WALK_REF_CYCLES, host.cpu_ghz), host.irq_us)


def compute_costs(approach: str, host: HostParams, hypervisor: HypervisorParams, *,
                  xen_pv: bool = False) -> ComputeCosts:
    """The per-event costs of ``approach`` (native, container, paravirtual, emulated).

    ``xen_pv``: the guest is a paravirtualized Xen guest (the paravirtual approach with the
    Xen backend). On a preset without nested paging it runs XenoLinux-style *direct paging*
    (:func:`xen_pv_costs_cycles`); with nested paging it is priced like any hardware VM
    (PVH: hardware paging, paravirtual drivers).
    """
    native = native_costs_us(host)
    if approach in ("native", "container"):
        return ComputeCosts(approach, "native", native, (0.0,) * 5, (0,) * 5)
    mode = PAGING[hypervisor.cpu_support]
    ghz = host.cpu_ghz
    if xen_pv and mode.paging == "shadow":
        cycles, counts = xen_pv_costs_cycles(hypervisor)
        why = ("", "Xen PV: the fault via Xen + an mmu_update hypercall",
               "Xen PV: CR3 load by hypercall", "", "Xen PV: event upcall")
        return ComputeCosts(approach, "xen-pv direct", native,
                            tuple(cycles_to_us(c, ghz) for c in cycles), counts, why)
    exit_cycles = hypervisor.exit_kernel_cycles
    posted = hypervisor.posted_interrupts
    extra = [0.0] * 5
    exits = [0] * 5
    why = [""] * 5
    if mode.binary_translation:
        # Two callouts into the VMM (the call's entry and return through translated code),
        # each priced as an exit handled in the VMM. They are not counted as exits: no
        # hardware exit happens, and the exit counts stay the I/O path's traps (and the
        # hardware exits of shadow paging and timers); the time is in virt_compute.
        extra[SYSCALL] = 2 * exit_cycles
        why[SYSCALL] = "binary translation: 2 VMM callouts"
    if mode.paging == "shadow":
        extra[PAGE_FAULT] = SHADOW_FAULT_EXITS * (exit_cycles + SHADOW_WORK_CYCLES)
        exits[PAGE_FAULT] = SHADOW_FAULT_EXITS
        why[PAGE_FAULT] = f"shadow paging: {SHADOW_FAULT_EXITS} traps"
        extra[CONTEXT_SWITCH] = exit_cycles + SHADOW_WORK_CYCLES
        exits[CONTEXT_SWITCH] = 1
        why[CONTEXT_SWITCH] = "shadow paging: the CR3 load traps"
    else:
        extra[TLB_MISS] = (mode.nested_walk_refs - NATIVE_WALK_REFS) * WALK_REF_CYCLES
        why[TLB_MISS] = f"nested paging: {mode.nested_walk_refs}-reference 2-D walk"
    if posted:
        # Arming the deadline (or sending the IPI) still traps; delivery is posted, the EOI
        # virtualized.
        extra[TIMER] = exit_cycles
        exits[TIMER] = 1
        why[TIMER] = "posted interrupt: 1 exit to arm it"
    else:
        # The injection figure already includes the exit that forces it (cpusupport); the
        # guest's EOI traps unless PV-EOI or APICv.
        eoi = bool(hypervisor.eoi_exit)
        extra[TIMER] = hypervisor.irq_inject_cycles + (exit_cycles if eoi else 0.0)
        exits[TIMER] = 1 + (1 if eoi else 0)
        why[TIMER] = "virtual interrupt: injection" + (" + EOI exit" if eoi else "")
    return ComputeCosts(approach, mode.paging, native,
                        tuple(cycles_to_us(c, ghz) for c in extra), tuple(exits), tuple(why))


def _cell(native_us: float, extra_us: float, exits: int) -> str:
    """One event's total, with its surcharge and (hardware) exits when there are any."""
    if extra_us <= 0.0:
        return f"{native_us:.3f}"
    counted = f", {exits} exit{'s' if exits != 1 else ''}" if exits else ""
    return f"{native_us + extra_us:.3f} (+{extra_us:.3f}{counted})"


def cost_table_markdown(host: HostParams | None = None) -> str:
    """The per-event cost of every preset as a Markdown table (docs/servers.md shows it)."""
    from virtlab.cpusupport import PRESET_NAMES

    host = host if host is not None else HostParams()
    lines = ["| approach, preset | paging | " + " | ".join(EVENTS) + " |",
             "|---|---|" + "---|" * len(EVENTS)]
    native = compute_costs("native", host, HypervisorParams())
    lines.append("| native, container (any preset) | - | "
                 + " | ".join(f"{us:.3f}" for us in native.native_us) + " |")
    for preset in PRESET_NAMES:
        c = compute_costs("paravirtual", host, HypervisorParams(cpu_support=preset))
        cells = [_cell(n, x, e)
                 for n, x, e in zip(c.native_us, c.extra_us, c.extra_exits, strict=True)]
        lines.append(f"| VM, `{preset}` | {c.paging} | " + " | ".join(cells) + " |")
    for preset in PRESET_NAMES:
        hv = HypervisorParams(cpu_support=preset)
        c = compute_costs("paravirtual", host, hv, xen_pv=True)
        if c.paging != "xen-pv direct":
            continue
        cells = [_cell(n, x, e)
                 for n, x, e in zip(c.native_us, c.extra_us, c.extra_exits, strict=True)]
        lines.append(f"| Xen PV guest, `{preset}` | {c.paging} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def xen_pv_costs_cycles(hypervisor: HypervisorParams
                        ) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Surcharge (cycles) and hypervisor entries per event of a XenoLinux-style PV guest.

    Barham et al. 2003 [B03], section 2.1: system calls reach the guest kernel through a
    fast exception handler without entering Xen (no surcharge); page faults are delivered via
    Xen (CR2 is privileged) and the guest's page-table updates are validated by Xen through a
    hypercall (one trap + one hypercall per fault); an address-space switch is a hypercall;
    the guest walks its own page tables in hardware (no TLB surcharge); a timer is an event
    delivered by an upcall, with no APIC EOI. Each entry into Xen is priced as the preset's
    ``hypercall_cycles`` [assumption: a PV guest enters Xen by a software trap, not VMCALL;
    no cycle count of that trap for these CPUs was found].
    """
    call = hypervisor.hypercall_cycles
    return ((0.0, 2 * call, call, 0.0, hypervisor.irq_inject_cycles), (0, 2, 1, 0, 1))
