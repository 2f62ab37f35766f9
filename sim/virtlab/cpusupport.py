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
``vtx-first-gen``           first-generation VT-x (Pentium 4, 2005-2007): a 2,409-cycle hardware
                            round trip, no APICv, no coalesced MMIO yet
``vtx-core2``               Core 2 (2008): the hardware round trip down to 937 cycles
``vtx-nehalem``             Nehalem (2009-2010): ~2,000 cycles of *direct* exit cost (the world
                            switch) as measured by SplitX
``modern``                  a current x86 server with KVM (~1,050-cycle CPUID exits), no APICv
``modern-apicv``            the same with APICv / posted interrupts: no injection or EOI exits
==========================  =====================================================================

**One basis for every preset.** Every exit cost is the *hardware round trip*
(``exit_roundtrip_cycles``: VM exit + VM entry, or a software VMM's callout) plus *the
hypervisor's handling* of that kind of exit, a separate cited term:

* ``exit_kernel_cycles`` = ``exit_roundtrip_cycles`` + ``exit_handling_cycles`` (dispatch and
  emulate a simple exit: CPUID, an ioeventfd write);
* ``hypercall_cycles`` = ``exit_roundtrip_cycles`` + ``hypercall_handling_cycles``;
* ``irq_inject_cycles`` = ``exit_roundtrip_cycles`` + ``inject_handling_cycles`` (the exit that
  forces the injection, and the injection work).

A user-space exit costs ``user_exit_factor`` kernel-handled ones. The measurements come on two
bases, and each is put on this one:

* hardware round trips alone: AA06 (Pentium 4: 2,409 cycles; Core 2: 937) and SplitX's *direct*
  cost (S28, Nehalem, ~2,000: the world switch, without the hypervisor's handling, which SplitX
  counts apart). The handling is added to them. (Before, these were used as the whole exit.)
* whole KVM exits, hardware and software together: S23 (a CPUID exit handled in KVM, 1,018-1,110
  cycles), S24 (a hypercall, 1,529-1,559) and S25 (a virtual IPI, 3,203-4,238). The round trip is
  S23 minus KVM's handling of a CPUID exit; the hypercall's and the injection's handling are S24
  and S25 minus that round trip.

KVM's handling of a simple exit (``exit_handling_cycles`` = 400: reading the exit reason and
qualification from the VMCS, the dispatch in ``vmx_handle_exit``, ``kvm_emulate_cpuid``, skipping
the instruction, and preparing the next entry) is an **assumption**: no public measurement
separates it from the hardware transition. It is applied in cycles on every hardware preset
(KVM's code path, not the CPU, sets it). For binary translation the callout (SU01: an IN/OUT
handled in the VMM, 1.36 µs at 733 MHz) is measured as a whole and booked as the round trip,
with no separate handling (the VMM's handling of a simple access is inside that measurement).

How each preset virtualizes memory (shadow page tables or nested paging, binary translation
or not) is :data:`PAGING`; :mod:`virtlab.compute` prices an application's system calls, page
faults, context switches, TLB misses and timers from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtlab.errors import ConfigError

__all__ = ["CpuSupport", "PRESETS", "PRESET_NAMES", "PRESET_FIELDS", "DEFAULT_PRESET",
           "DERIVED_FIELDS", "cpu_support", "MmuSupport", "PAGING"]

#: KVM's handling of a simple kernel-handled exit (CPUID, an ioeventfd MMIO write), cycles
#: [assumption; see the module docstring].
KVM_EXIT_HANDLING_CYCLES = 400.0
#: A CPUID exit handled in KVM on a current server, cycles [S23: 1,018-1,110].
MODERN_KERNEL_EXIT_CYCLES = 1050.0
#: The hardware round trip on a current server, cycles [derived: S23 - KVM's handling].
MODERN_ROUNDTRIP_CYCLES = MODERN_KERNEL_EXIT_CYCLES - KVM_EXIT_HANDLING_CYCLES
#: KVM's hypercall handling, cycles [derived: S24 1,550 - the modern round trip].
HYPERCALL_HANDLING_CYCLES = 1550.0 - MODERN_ROUNDTRIP_CYCLES
#: KVM's injection work with the exit's handling that forces it, cycles [derived: S25 3,300 -
#: the modern round trip].
INJECT_HANDLING_CYCLES = 3300.0 - MODERN_ROUNDTRIP_CYCLES
#: Ratio of an exit to the user-space device model to one handled in the kernel (S26: measured
#: 3.3 for nested guests only; used for every hardware preset as an assumption).
USER_EXIT_FACTOR = 3.3

#: The fields of HypervisorParams a preset fills (the round trip, the handling terms, and the
#: mechanisms); DERIVED_FIELDS are then the round trip plus a handling term, unless set.
PRESET_FIELDS = ("exit_roundtrip_cycles", "exit_handling_cycles", "hypercall_handling_cycles",
                 "inject_handling_cycles", "user_exit_factor", "eoi_exit", "posted_interrupts",
                 "coalesced_mmio")
#: Derived cost -> the handling term added to ``exit_roundtrip_cycles``.
DERIVED_FIELDS = {"exit_kernel_cycles": "exit_handling_cycles",
                  "hypercall_cycles": "hypercall_handling_cycles",
                  "irq_inject_cycles": "inject_handling_cycles"}


@dataclass(frozen=True, slots=True)
class CpuSupport:
    """One preset: the costs of trapping into the hypervisor on one generation of CPUs.

    Invariant: every exit cost is ``exit_roundtrip_cycles`` plus the handling term of its kind
    (:data:`DERIVED_FIELDS`), so presets measured on different bases compare on one.

    Attributes
    ----------
    exit_roundtrip_cycles:
        The hardware VM exit + VM entry (binary translation: the VMM callout), cycles.
    exit_handling_cycles, hypercall_handling_cycles, inject_handling_cycles:
        The hypervisor's handling of a simple kernel-handled exit, of a hypercall, and of a
        virtual interrupt's injection, beyond the round trip, cycles.
    user_exit_factor:
        A trap forwarded to the user-space device model costs this many kernel-handled ones.
    eoi_exit, posted_interrupts, coalesced_mmio:
        The guest's EOI traps; APICv posted interrupts (no injection work, no EOI exit);
        side-effect-free MMIO writes are queued in the kernel instead of exiting to user space.
    sources:
        Where each value comes from, by field name (derived costs included).

    """

    name: str
    era: str
    description: str
    exit_roundtrip_cycles: float
    exit_handling_cycles: float
    hypercall_handling_cycles: float
    inject_handling_cycles: float
    user_exit_factor: float
    eoi_exit: bool
    posted_interrupts: bool
    coalesced_mmio: bool
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def exit_kernel_cycles(self) -> float:
        """A trap handled by the hypervisor itself: round trip + handling, cycles."""
        return self.exit_roundtrip_cycles + self.exit_handling_cycles

    @property
    def hypercall_cycles(self) -> float:
        """A hypercall: round trip + its handling, cycles."""
        return self.exit_roundtrip_cycles + self.hypercall_handling_cycles

    @property
    def irq_inject_cycles(self) -> float:
        """One virtual interrupt, with the exit that forces it: round trip + injection work."""
        return self.exit_roundtrip_cycles + self.inject_handling_cycles


_HANDLING_SOURCES = {
    "exit_handling_cycles": "assumption: KVM's handling of a CPUID exit (VMCS reads, "
                            "vmx_handle_exit dispatch, kvm_emulate_cpuid, skip, entry "
                            "preparation), 400 cycles",
    "hypercall_handling_cycles": "derived: S24 hypercall 1,550 - the modern round trip 650",
    "inject_handling_cycles": "derived: S25 virtual IPI 3,300 - the modern round trip 650",
    "exit_kernel_cycles": "derived: exit_roundtrip_cycles + exit_handling_cycles",
    "hypercall_cycles": "derived: exit_roundtrip_cycles + hypercall_handling_cycles",
    "irq_inject_cycles": "derived: exit_roundtrip_cycles + inject_handling_cycles",
}


def _hardware(name: str, era: str, description: str, roundtrip_cycles: float,
              roundtrip_source: str, *, coalesced: bool, apicv: bool = False) -> CpuSupport:
    """A hardware-assisted preset: its round trip plus KVM's handling terms."""
    sources = {
        "exit_roundtrip_cycles": roundtrip_source,
        **_HANDLING_SOURCES,
        "user_exit_factor": "S26 ratio 3.3 (nested guests), assumption for this CPU",
        "eoi_exit": ("S30b (APICv virtualizes the EOI: no exit)" if apicv
                     else "S30 (the guest's EOI write traps without APICv or PV-EOI)"),
        "posted_interrupts": ("S30b (APICv virtual interrupt delivery)" if apicv
                              else "no APICv on this CPU, or left off in this preset"),
        "coalesced_mmio": ("QEMU/KVM coalesced MMIO, 2008 (S21)" if coalesced
                           else "before KVM's coalesced MMIO (2008)"),
    }
    return CpuSupport(name, era, description, roundtrip_cycles, KVM_EXIT_HANDLING_CYCLES,
                      HYPERCALL_HANDLING_CYCLES, INJECT_HANDLING_CYCLES, USER_EXIT_FACTOR,
                      eoi_exit=not apicv, posted_interrupts=apicv, coalesced_mmio=coalesced,
                      sources=sources)


_SUGERMAN = "Sugerman, Venkitachalam, Lim, USENIX ATC 2001, Table 1 (733 MHz Pentium III)"
_MODERN_ROUNDTRIP = ("derived: S23 (a CPUID exit handled in KVM, 1,018-1,110 cycles; 1,050) - "
                     "KVM's handling (exit_handling_cycles, 400) = 650")

PRESETS: dict[str, CpuSupport] = {p.name: p for p in (
    CpuSupport(
        "binary-translation", "1999-2006",
        "software VMM (binary translation, hosted): I/O accesses are VMM callouts; those the "
        "device model must see are world switches to the host",
        exit_roundtrip_cycles=1000.0, exit_handling_cycles=0.0, hypercall_handling_cycles=0.0,
        inject_handling_cycles=1900.0, user_exit_factor=5.5, eoi_exit=True,
        posted_interrupts=False, coalesced_mmio=False,
        sources={
            "exit_roundtrip_cycles": f"{_SUGERMAN}: an IN/OUT handled in the VMM, 1.36 µs "
                                     "= 1,000 cycles (the callout and its handling, measured "
                                     "as a whole)",
            "exit_handling_cycles": "inside the SU01 callout measurement (no separate term)",
            "hypercall_handling_cycles": "assumption: a VMM callout like an access handled in "
                                         "the VMM (nothing beyond the callout)",
            "inject_handling_cycles": f"derived: {_SUGERMAN}: virtualizing the guest's IRET "
                                      "after a virtual IRQ, 3.93 µs = 2,900 cycles, - the "
                                      "callout 1,000",
            "exit_kernel_cycles": "derived: exit_roundtrip_cycles + exit_handling_cycles",
            "hypercall_cycles": "derived: exit_roundtrip_cycles + hypercall_handling_cycles",
            "irq_inject_cycles": "derived: exit_roundtrip_cycles + inject_handling_cycles",
            "user_exit_factor": f"{_SUGERMAN}: an IN/OUT switching to the VMApp, 7.45 µs, "
                                "vs 1.36 µs in the VMM (5.5x)",
            "eoi_exit": "assumption: the guest's interrupt-controller EOI is emulated by the "
                        "VMM",
            "posted_interrupts": "no hardware support",
            "coalesced_mmio": "no such mechanism",
        }),
    _hardware("vtx-first-gen", "2005-2007",
              "first-generation VT-x (Pentium 4): expensive VM entry/exit, no APICv",
              2409.0, "AA06 (Adams & Agesen, ASPLOS 2006: a VM exit + entry round trip of "
                      "2,409 cycles on a Pentium 4)", coalesced=False),
    _hardware("vtx-core2", "2008",
              "VT-x on Core 2: a 937-cycle VM exit + entry round trip, no APICv",
              937.0, "AA06 (Adams & Agesen: a 937-cycle round trip on a Core 2 Duo)",
              coalesced=True),
    _hardware("vtx-nehalem", "2009-2010",
              "VT-x on Nehalem (KVM 2.6.34): ~2,000 cycles of direct exit cost, no APICv",
              2000.0, "SplitX, Landau, Ben-Yehuda, Gordon (S28: ~2,000 cycles of direct cost, "
                      "the world switch, Xeon X5570)", coalesced=True),
    _hardware("modern", "2020s",
              "current x86 server with KVM: ~1,050-cycle CPUID exits, APICv off",
              MODERN_ROUNDTRIP_CYCLES, _MODERN_ROUNDTRIP, coalesced=True),
    _hardware("modern-apicv", "2020s",
              "current x86 server with KVM and APICv: posted interrupts, virtualized EOI",
              MODERN_ROUNDTRIP_CYCLES, _MODERN_ROUNDTRIP, coalesced=True, apicv=True),
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
