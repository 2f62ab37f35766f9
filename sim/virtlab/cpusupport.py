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
``vtx-core2``               Core 2 (Penryn, 2008): the hardware round trip down to 1,118 cycles
``vtx-nehalem``             Nehalem (2009-2010): a 950-cycle round trip, ~2,000-cycle exits with
                            KVM 2.6.34 (SplitX)
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

* hardware round trips alone, with no hypervisor software: S162 (vmlatency, a loop of VMRESUME
  into a guest whose CPUID exits at once: Penryn 1,118 cycles, Nehalem 950, Skylake-SP Xeons
  516-636) and AA06 (Pentium 4: 2,409);
* whole KVM exits, hardware and software together: S23 (a CPUID exit, 1,018-1,110 cycles on a
  current server), S24 (a hypercall, 1,529-1,559), S25 (a virtual IPI, 3,203-4,238), and S28
  (SplitX's ~2,000 cycles per exit with KVM 2.6.34 on Nehalem: twice the Nehalem hardware round
  trip, so it holds KVM's software too).

The handling is then the difference, in two eras of KVM: 470 cycles today (S23 - the Skylake-SP
round trip) and 1,050 in 2010 (S28 - the Nehalem round trip); the earlier presets take the 2010
figure (an **assumption**: KVM's exit path was no shorter before). A hypercall costs KVM 500
cycles more than a CPUID exit (S24 - S23) and an injection 2,250 more (S25 - S23), in every era.
Before this basis, the Pentium 4's and Core 2's round trips (2,409; 937, a figure attributed to
AA06 through a secondary summary that S162's Core 2 measurements do not reproduce) were used as
whole exits, so those presets lacked the hypervisor's software entirely. For binary translation
the callout (SU01: an IN/OUT handled in the VMM, 1.36 µs at 733 MHz) is measured as a whole and
booked as the round trip, with no separate handling.

How each preset virtualizes memory (shadow page tables or nested paging, binary translation
or not) is :data:`PAGING`; :mod:`virtlab.compute` prices an application's system calls, page
faults, context switches, TLB misses and timers from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtlab.errors import ConfigError

__all__ = ["CpuSupport", "PRESETS", "PRESET_NAMES", "PRESET_FIELDS", "DEFAULT_PRESET",
           "DERIVED_FIELDS", "cpu_support", "MmuSupport", "PAGING"]

#: Hardware VM exit + entry round trips measured with no hypervisor software at all (S162: a
#: loop of VMRESUME into a guest whose CPUID exits at once), cycles: Penryn Core 2 Duo (E8500,
#: T9600, 2008), Nehalem (Core i5-760), Skylake-SP / Cascade Lake Xeons (Gold 6140 636, 6142M
#: 516, 6252N 518; the middle of that range).
ROUNDTRIP_PENRYN_CYCLES = 1118.0
ROUNDTRIP_NEHALEM_CYCLES = 950.0
ROUNDTRIP_SKYLAKE_SP_CYCLES = 580.0
#: KVM's software per simple exit (CPUID), cycles, in two eras [derived]: KVM 2.6.34 on
#: Nehalem, S28's ~2,000-cycle exit minus the Nehalem round trip; current KVM, S23's
#: 1,050-cycle CPUID exit minus the Skylake-SP round trip.
KVM_2010_EXIT_HANDLING_CYCLES = 2000.0 - ROUNDTRIP_NEHALEM_CYCLES
KVM_2024_EXIT_HANDLING_CYCLES = 1050.0 - ROUNDTRIP_SKYLAKE_SP_CYCLES
#: What a hypercall and an injection cost KVM beyond a CPUID exit, cycles [derived: S24 1,550
#: and S25 3,300 minus S23 1,050, all whole KVM exits].
HYPERCALL_EXTRA_CYCLES = 1550.0 - 1050.0
INJECT_EXTRA_CYCLES = 3300.0 - 1050.0
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


def _hardware(name: str, era: str, description: str, roundtrip_cycles: float,
              roundtrip_source: str, handling_cycles: float, handling_source: str, *,
              coalesced: bool, apicv: bool = False) -> CpuSupport:
    """A hardware-assisted preset: its round trip plus the era's KVM handling terms."""
    sources = {
        "exit_roundtrip_cycles": roundtrip_source,
        "exit_handling_cycles": handling_source,
        "hypercall_handling_cycles": "derived: exit_handling_cycles + 500 (S24 - S23: a "
                                     "hypercall costs KVM 500 cycles more than a CPUID exit)",
        "inject_handling_cycles": "derived: exit_handling_cycles + 2,250 (S25 - S23: the "
                                  "injection work beyond the exit that forces it)",
        "exit_kernel_cycles": "derived: exit_roundtrip_cycles + exit_handling_cycles",
        "hypercall_cycles": "derived: exit_roundtrip_cycles + hypercall_handling_cycles",
        "irq_inject_cycles": "derived: exit_roundtrip_cycles + inject_handling_cycles",
        "user_exit_factor": "S26 ratio 3.3 (nested guests), assumption for this CPU",
        "eoi_exit": ("S30b (APICv virtualizes the EOI: no exit)" if apicv
                     else "S30 (the guest's EOI write traps without APICv or PV-EOI)"),
        "posted_interrupts": ("S30b (APICv virtual interrupt delivery)" if apicv
                              else "no APICv on this CPU, or left off in this preset"),
        "coalesced_mmio": ("QEMU/KVM coalesced MMIO, 2008 (S21)" if coalesced
                           else "before KVM's coalesced MMIO (2008)"),
    }
    return CpuSupport(name, era, description, roundtrip_cycles, handling_cycles,
                      handling_cycles + HYPERCALL_EXTRA_CYCLES,
                      handling_cycles + INJECT_EXTRA_CYCLES, USER_EXIT_FACTOR,
                      eoi_exit=not apicv, posted_interrupts=apicv, coalesced_mmio=coalesced,
                      sources=sources)


_SUGERMAN = "Sugerman, Venkitachalam, Lim, USENIX ATC 2001, Table 1 (733 MHz Pentium III)"
_KVM_2010 = ("derived: S28 (SplitX: ~2,000 cycles per exit, KVM 2.6.34 on a Xeon X5570) - the "
             "Nehalem round trip (S162, 950) = 1,050")
_KVM_2010_EARLIER = (f"{_KVM_2010}; assumption for this earlier era (KVM's exit path was no "
                     "shorter before 2010)")
_KVM_2024 = ("derived: S23 (a CPUID exit handled in KVM, 1,018-1,110 cycles; 1,050) - the "
             "Skylake-SP round trip (S162, 580) = 470")
_SKX = ("S162 (vmlatency: Xeon Gold 6140 636, 6142M 516, 6252N 518 cycles; the middle of "
        "that range)")

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
              "first-generation VT-x (Pentium 4): a 2,409-cycle round trip, no APICv",
              2409.0, "AA06 (Adams & Agesen, ASPLOS 2006: a VM exit + entry round trip of "
                      "2,409 cycles on a Pentium 4)",
              KVM_2010_EXIT_HANDLING_CYCLES, _KVM_2010_EARLIER, coalesced=False),
    _hardware("vtx-core2", "2008",
              "VT-x on Core 2 (Penryn): a 1,118-cycle round trip, no APICv",
              ROUNDTRIP_PENRYN_CYCLES,
              "S162 (vmlatency: 1,118 cycles on a Core 2 Duo E8500 and a T9600, Penryn, 2008; "
              "the 937 cycles this preset used, attributed to AA06 through a secondary "
              "summary, could not be checked, and the 2006 Merom measures 1,681)",
              KVM_2010_EXIT_HANDLING_CYCLES, _KVM_2010_EARLIER, coalesced=True),
    _hardware("vtx-nehalem", "2009-2010",
              "VT-x on Nehalem (KVM 2.6.34): a 950-cycle round trip, ~2,000-cycle exits, "
              "no APICv",
              ROUNDTRIP_NEHALEM_CYCLES, "S162 (vmlatency: 950 cycles on a Core i5-760, "
              "Nehalem)", KVM_2010_EXIT_HANDLING_CYCLES, _KVM_2010, coalesced=True),
    _hardware("modern", "2020s",
              "current x86 server with KVM: ~1,050-cycle CPUID exits, APICv off",
              ROUNDTRIP_SKYLAKE_SP_CYCLES, _SKX, KVM_2024_EXIT_HANDLING_CYCLES, _KVM_2024,
              coalesced=True),
    _hardware("modern-apicv", "2020s",
              "current x86 server with KVM and APICv: posted interrupts, virtualized EOI",
              ROUNDTRIP_SKYLAKE_SP_CYCLES, _SKX, KVM_2024_EXIT_HANDLING_CYCLES, _KVM_2024,
              coalesced=True, apicv=True),
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
