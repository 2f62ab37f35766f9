"""CPU virtualization support as named presets: what a trap into the hypervisor costs, by era.

Whether emulation loses half of small-request I/O depends on "how well the processor supports
virtualization" (SA07). A preset names one point in that history and fills
every cost field of ``[hypervisor]`` (:class:`~virtlab.hardware.HypervisorParams`) that a
scenario leaves unset; a field set explicitly (in a profile, a scenario file or with ``--set``)
always wins over the preset.

==========================  =====================================================================
``binary-translation``      software VMM before hardware support (VMware Workstation's hosted
                            VMM): a trapping I/O access is a callout into the VMM; one that
                            needs the device model is a *world switch* to the host
``vtx-first-gen``           first-generation VT-x (Pentium 4, 2005-2007): expensive VM exits,
                            no APICv, no coalesced MMIO yet
``vtx-core2``               Core 2 (2008): VM entry/exit down to 937 cycles
``vtx-nehalem``             Nehalem (2009-2010): ~2,000 cycles *direct* exit cost as measured by
                            SplitX (a different method from the 937 above, so not comparable)
``modern``                  a current x86 server with KVM (~1,050-cycle exits), no APICv
``modern-apicv``            the same with APICv / posted interrupts: no injection or EOI exits
==========================  =====================================================================

How each preset virtualizes memory (shadow page tables or nested paging, binary translation
or not) is :data:`PAGING`; :mod:`virtlab.compute` prices an application's system calls, page
faults, context switches, TLB misses and timers from it.

Derived constants (documented once, used by several presets): a virtual interrupt costs one
exit to force the injection plus KVM's injection work, and the injection work is S25's IPI
round trip (3,300 cycles) minus a kernel-handled exit (S23, 1,050): 2,250 cycles. A hypercall
costs one exit plus 500 cycles of handling (S24 1,550 minus S23 1,050).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtlab.errors import ConfigError

__all__ = ["CpuSupport", "PRESETS", "PRESET_NAMES", "PRESET_FIELDS", "DEFAULT_PRESET",
           "cpu_support", "MmuSupport", "PAGING"]

#: Injection work beyond the exit that forces it, in cycles [derived: S25 3,300 - S23 1,050].
INJECT_WORK_CYCLES = 2250.0
#: Hypercall handling beyond the exit, in cycles [derived: S24 1,550 - S23 1,050].
HYPERCALL_WORK_CYCLES = 500.0
#: Ratio of an exit to the user-space device model to one handled in the kernel (S26: measured
#: 3.3 for nested guests only; used for every hardware preset as an assumption).
USER_EXIT_FACTOR = 3.3

#: The fields of HypervisorParams a preset fills.
PRESET_FIELDS = ("exit_kernel_cycles", "user_exit_factor", "hypercall_cycles",
                 "irq_inject_cycles", "eoi_exit", "posted_interrupts", "coalesced_mmio")


@dataclass(frozen=True, slots=True)
class CpuSupport:
    """One preset: the costs of trapping into the hypervisor on one generation of CPUs.

    Attributes
    ----------
    exit_kernel_cycles:
        A trap handled by the hypervisor itself (KVM, or a software VMM's callout), cycles.
    user_exit_factor:
        A trap forwarded to the user-space device model costs this many kernel-handled ones.
    hypercall_cycles, irq_inject_cycles:
        A hypercall round trip; delivering one virtual interrupt (including the exit that
        forces it), cycles.
    eoi_exit, posted_interrupts, coalesced_mmio:
        The guest's EOI traps; APICv posted interrupts (no injection work, no EOI exit);
        side-effect-free MMIO writes are queued in the kernel instead of exiting to user space.
    sources:
        Where each value comes from, by field name.

    """

    name: str
    era: str
    description: str
    exit_kernel_cycles: float
    user_exit_factor: float
    hypercall_cycles: float
    irq_inject_cycles: float
    eoi_exit: bool
    posted_interrupts: bool
    coalesced_mmio: bool
    sources: dict[str, str] = field(default_factory=dict)


def _hardware(name: str, era: str, description: str, exit_cycles: float, exit_source: str, *,
              coalesced: bool, apicv: bool = False, hypercall: float | None = None,
              inject: float | None = None, extra: dict[str, str] | None = None) -> CpuSupport:
    """A hardware-assisted preset whose derived costs follow the module's constants."""
    hypercall_cycles = exit_cycles + HYPERCALL_WORK_CYCLES if hypercall is None else hypercall
    inject_cycles = exit_cycles + INJECT_WORK_CYCLES if inject is None else inject
    sources = {
        "exit_kernel_cycles": exit_source,
        "user_exit_factor": "S26 ratio 3.3 (nested guests), assumption for this CPU",
        "hypercall_cycles": "derived: one exit + 500 cycles of handling (S24 - S23)",
        "irq_inject_cycles": "derived: one exit + 2,250 cycles of injection work (S25 - S23)",
        "eoi_exit": ("S30b (APICv virtualizes the EOI: no exit)" if apicv
                     else "S30 (the guest's EOI write traps without APICv or PV-EOI)"),
        "posted_interrupts": ("S30b (APICv virtual interrupt delivery)" if apicv
                              else "no APICv on this CPU, or left off in this preset"),
        "coalesced_mmio": ("QEMU/KVM coalesced MMIO, 2008 (S21)" if coalesced
                           else "before KVM's coalesced MMIO (2008)"),
    }
    sources.update(extra or {})
    return CpuSupport(name, era, description, exit_cycles, USER_EXIT_FACTOR, hypercall_cycles,
                      inject_cycles, eoi_exit=not apicv, posted_interrupts=apicv,
                      coalesced_mmio=coalesced, sources=sources)


_SUGERMAN = "Sugerman, Venkitachalam, Lim, USENIX ATC 2001, Table 1 (733 MHz Pentium III)"

PRESETS: dict[str, CpuSupport] = {p.name: p for p in (
    CpuSupport(
        "binary-translation", "1999-2006",
        "software VMM (binary translation, hosted): I/O accesses are VMM callouts; those the "
        "device model must see are world switches to the host",
        exit_kernel_cycles=1000.0, user_exit_factor=5.5, hypercall_cycles=1000.0,
        irq_inject_cycles=2900.0, eoi_exit=True, posted_interrupts=False, coalesced_mmio=False,
        sources={
            "exit_kernel_cycles": f"{_SUGERMAN}: an IN/OUT handled in the VMM, 1.36 µs "
                                  "= 1,000 cycles",
            "user_exit_factor": f"{_SUGERMAN}: an IN/OUT switching to the VMApp, 7.45 µs, "
                                "vs 1.36 µs in the VMM (5.5x)",
            "hypercall_cycles": "assumption: a VMM callout like an access handled in the VMM",
            "irq_inject_cycles": f"{_SUGERMAN}: virtualizing the guest's IRET after a "
                                 "virtual IRQ, 3.93 µs = 2,900 cycles",
            "eoi_exit": "assumption: the guest's interrupt-controller EOI is emulated by the "
                        "VMM",
            "posted_interrupts": "no hardware support",
            "coalesced_mmio": "no such mechanism",
        }),
    _hardware("vtx-first-gen", "2005-2007",
              "first-generation VT-x (Pentium 4): expensive VM entry/exit, no APICv",
              2409.0, "AA06 (Adams & Agesen, ASPLOS 2006: 2,409 cycles on "
                      "a Pentium 4)", coalesced=False),
    _hardware("vtx-core2", "2008",
              "VT-x on Core 2: VM entry/exit 937 cycles, no APICv",
              937.0, "AA06 (Adams & Agesen: 937 cycles on a Core 2 Duo)",
              coalesced=True),
    _hardware("vtx-nehalem", "2009-2010",
              "VT-x on Nehalem (KVM 2.6.34): ~2,000 cycles direct exit cost, no APICv",
              2000.0, "SplitX, Landau, Ben-Yehuda, Gordon (S28: ~2,000 cycles "
                      "direct cost, Xeon X5570)", coalesced=True),
    _hardware("modern", "2020s",
              "current x86 server with KVM: ~1,050-cycle exits, APICv off",
              1050.0, "S23 (1,018-1,110 cycles)", coalesced=True,
              hypercall=1550.0, inject=3300.0,
              extra={"hypercall_cycles": "S24 (1,529-1,559 cycles)",
                     "irq_inject_cycles": "S25 (3,203-4,238 cycles)"}),
    _hardware("modern-apicv", "2020s",
              "current x86 server with KVM and APICv: posted interrupts, virtualized EOI",
              1050.0, "S23 (1,018-1,110 cycles)", coalesced=True, apicv=True,
              hypercall=1550.0, inject=3300.0,
              extra={"hypercall_cycles": "S24 (1,529-1,559 cycles)",
                     "irq_inject_cycles": "S25 (unused while posted interrupts are on)"}),
)}

#: Preset names, in historical order.
PRESET_NAMES = tuple(PRESETS)
#: The preset of the default scenario (the dataclass defaults of HypervisorParams).
DEFAULT_PRESET = "modern"


def cpu_support(name: str) -> CpuSupport:
    """Return the preset called ``name``.

    Raises
    ------
    ConfigError
        Naming the field ``cpu_support`` and the allowed names.

    """
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError("cpu_support", f"must be one of {', '.join(map(repr, PRESET_NAMES))}"
                                         f", got {name!r}") from None


@dataclass(frozen=True, slots=True)
class MmuSupport:
    """How a preset virtualizes the guest's memory and privileged instructions.

    Attributes
    ----------
    binary_translation:
        The guest kernel runs translated: its system calls enter and leave through the VMM.
    paging:
        ``"shadow"`` (the VMM keeps shadow page tables: guest faults, PTE writes and CR3 loads
        trap) or ``"nested"`` (EPT/NPT: the hardware walks guest and host tables).
    nested_walk_refs:
        Memory references of one TLB miss under nested paging (0 under shadow paging).
    source:
        Where the classification comes from.

    """

    binary_translation: bool
    paging: str
    nested_walk_refs: int
    source: str


_BHARGAVA = ("BH08: a 2-D walk of 4-level guest and 4-level nested tables takes up to 24 "
             "references")
#: Memory virtualization of each preset (used by :mod:`virtlab.compute`).
PAGING: dict[str, MmuSupport] = {
    "binary-translation": MmuSupport(True, "shadow", 0,
                                     "AA06 (VMware's software VMM: binary translation and "
                                     "shadow page tables)"),
    "vtx-first-gen": MmuSupport(False, "shadow", 0,
                                "AA06 (first-generation VT-x offers no MMU support: "
                                "shadow page tables)"),
    "vtx-core2": MmuSupport(False, "shadow", 0,
                            "Intel: EPT first shipped with Nehalem (2008); Core 2 has none"),
    "vtx-nehalem": MmuSupport(False, "nested", 24, f"EPT on Nehalem; {_BHARGAVA}"),
    "modern": MmuSupport(False, "nested", 19,
                         "EPT with 2 MiB host pages (KVM backs guest memory with transparent "
                         "huge pages): (4+1)x(3+1)-1 = 19 references [derived from the 2-D "
                         f"walk formula; {_BHARGAVA}]"),
    "modern-apicv": MmuSupport(False, "nested", 19, "as 'modern'"),
}
