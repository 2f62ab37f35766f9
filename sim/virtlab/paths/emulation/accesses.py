"""Access profiles: which register accesses a guest driver makes per device operation.

An emulated device is described by data, not code: for each operation (a transmit doorbell,
entering and leaving the interrupt handler, a receive refill, issuing a disk command) the
ordered list of register :class:`Access` es the unmodified driver performs. Every access traps;
what it costs follows from its ``space``, ``handler`` and ``coalescible`` flag and from the CPU
support preset (:mod:`virtlab.paths.emulation.exits`).

The built-in devices (``e1000``, ``pcnet32``, ``ahci``, ``ide``) live in ``devices.toml`` next
to this module, each access with a note saying where it was counted from. A scenario selects
one by name and may override any table::

    [emulated]
    nic_model = "e1000"
    [emulated.nic]          # merged over the e1000 table
    irq_exit = []           # what if the driver never re-enabled interrupts by MMIO?
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from virtlab.errors import ConfigError
from virtlab.params import Params, param

__all__ = ["Access", "NicModel", "DiskModel", "NIC_MODELS", "DISK_CONTROLLERS",
           "builtin_table", "builtin_nic", "builtin_disk"]

NIC_MODELS = ("e1000", "pcnet32")
DISK_CONTROLLERS = ("ahci", "ide")


@dataclass(frozen=True, slots=True, kw_only=True)
class Access(Params):
    """One register access by the guest driver; it traps (a VM exit or a VMM callout)."""

    register: str = param("?", source="-", doc="The register, as the driver's source names it.")
    space: str = param("mmio", choices=("mmio", "pio"), source="-",
                       doc="Memory-mapped register (MMIO exit) or I/O port (port I/O exit).")
    op: str = param("write", choices=("read", "write"), source="-", doc="Read or write.")
    handler: str = param(
        "device-model", choices=("device-model", "hypervisor"), source="-",
        doc="'device-model': forwarded to the device model (an exit to user space unless the "
            "model runs in the kernel); 'hypervisor': emulated by the hypervisor itself.")
    coalescible: bool = param(
        False, source="-",
        doc="A write without immediate side effect that coalesced MMIO queues in the kernel.")
    note: str = param("", source="-", doc="What the access does; where it was counted from.")

    def check(self) -> None:
        """Only writes can be queued by coalesced MMIO."""
        if self.coalescible and self.op != "write":
            raise ConfigError("coalescible", "only writes can be coalesced")


_ACCESSES = "Accesses in driver order; each one traps."


@dataclass(frozen=True, slots=True, kw_only=True)
class NicModel(Params):
    """An emulated NIC: its capabilities and the accesses of each driver operation."""

    kind: str = param("nic", choices=("nic",), source="-", doc="Device type tag.")
    description: str = param("", source="-", doc="What device and driver this table describes.")
    tso: bool = param(True, source="S18 (QEMU's e1000 accepts TSO segments)",
                      doc="The device accepts segments larger than the MTU (segmentation "
                          "offload, done in software by the device model).")
    tx_doorbell: tuple[Access, ...] = field(default=())
    irq_entry: tuple[Access, ...] = field(default=())
    irq_exit: tuple[Access, ...] = field(default=())
    rx_refill: tuple[Access, ...] = field(default=())
    rx_refill_frames: int = param(
        16, lo=1, hi=65536,
        source="S17 (e1000_clean_rx_irq: E1000_RX_BUFFER_WRITE 16, and once more at the end "
               "of each poll for the rest)",
        doc="The receive poll refills buffers (the rx_refill accesses) after this many "
            "received frames, and once at its end for fewer.")
    napi: bool = param(
        False, source="S100 (e1000_clean: napi_complete_done only when work_done < budget); "
                       "Linux 2.4 pcnet32_interrupt loops until no cause is left",
        doc="The driver polls NAPI-style, counting received frames against the budget: a "
            "poll that finds fewer completes and unmasks; without it the handler loops until "
            "nothing is left.")
    irq_cause_latch: bool = param(
        False,
        source="S100 (e1000: e1000_intr reads ICR once; QEMU mac_icr_read clears it, "
               "set_ims re-evaluates it); pcnet32_interrupt loops until CSR0 shows no cause",
        doc="The handler reads a read-to-clear cause register once, at entry: a cause the "
            "device raises after that read stays latched while the device is masked and "
            "raises the interrupt again at the unmask, even if the poll handled its packet.")


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskModel(Params):
    """An emulated disk controller: commands in flight and the accesses of each operation."""

    kind: str = param("disk", choices=("disk",), source="-", doc="Device type tag.")
    description: str = param("", source="-", doc="What controller and driver this describes.")
    queue_depth: int = param(1, lo=1, hi=65536, source="S19 (IDE: 1), S20 (AHCI NCQ: 32)",
                             doc="Commands the controller accepts at once.")
    issue: tuple[Access, ...] = field(default=())
    irq_entry: tuple[Access, ...] = field(default=())
    irq_exit: tuple[Access, ...] = field(default=())
    # PIO data transfer (emulated.ide_transfer = "pio"); empty for a controller without it.
    pio_issue: tuple[Access, ...] = field(default=())
    pio_irq_entry: tuple[Access, ...] = field(default=())
    pio_sector: tuple[Access, ...] = field(default=())
    pio_block_end: tuple[Access, ...] = field(default=())
    pio_last: tuple[Access, ...] = field(default=())
    pio_block_sectors: int = param(
        16, lo=1, hi=256,
        source="S101 (QEMU ide_reset: mult_sectors = MAX_MULT_SECTORS = 16; libata "
               "ata_rwcmd_protocol uses READ/WRITE MULTIPLE with multi_count)",
        doc="PIO: sectors per DRQ block, one interrupt per block.")
    pio_sector_elements: int = param(
        128, lo=1, hi=4096,
        source="S101 (ata_piix inherits ata_bmdma32_port_ops: ata_sff_data_xfer32, 4 bytes "
               "per element; 256 with 16-bit PIO)",
        doc="PIO: data-port elements per 512-byte sector; the device model handles each one "
            "(QEMU ide_data_readl/writel), all in one exit.")

    @property
    def has_pio(self) -> bool:
        """The table describes a PIO data path (a data-port access per sector)."""
        return bool(self.pio_sector)


#: Operation tables of each device type (documented in devices.toml and docs/emulation.md).
NIC_OPERATIONS = ("tx_doorbell", "irq_entry", "irq_exit", "rx_refill")
DISK_OPERATIONS = ("issue", "irq_entry", "irq_exit", "pio_issue", "pio_irq_entry",
                   "pio_sector", "pio_block_end", "pio_last")


@cache
def _builtin_tables() -> dict[str, dict[str, Any]]:
    text = (resources.files("virtlab.paths.emulation") / "devices.toml").read_text("utf-8")
    return tomllib.loads(text)


def builtin_table(name: str, kind: str) -> dict[str, Any]:
    """The raw table of built-in device ``name`` (a fresh copy, safe to merge into).

    Raises
    ------
    ConfigError
        If no built-in device of that ``kind`` has this name.

    """
    names = NIC_MODELS if kind == "nic" else DISK_CONTROLLERS
    field_name = "nic_model" if kind == "nic" else "disk_controller"
    table = _builtin_tables().get(name) if isinstance(name, str) else None
    if table is None or table.get("kind") != kind:
        raise ConfigError(field_name, f"must be one of {', '.join(map(repr, names))}, "
                                      f"got {name!r}")
    return {key: (list(value) if isinstance(value, list) else value)
            for key, value in table.items()}


def merged_table(name: str, kind: str, override: Mapping[str, Any] | None) -> dict[str, Any]:
    """The built-in table ``name`` with the keys of ``override`` replacing its own."""
    table = builtin_table(name, kind)
    if override is not None:
        if not isinstance(override, Mapping):
            raise ConfigError("", f"expected a table, got {override!r}")
        table.update(override)
    return table


@cache
def builtin_nic(name: str) -> NicModel:
    """The built-in NIC model ``name`` (``e1000`` or ``pcnet32``)."""
    return NicModel.from_dict(builtin_table(name, "nic"))


@cache
def builtin_disk(name: str) -> DiskModel:
    """The built-in disk controller ``name`` (``ahci`` or ``ide``)."""
    return DiskModel.from_dict(builtin_table(name, "disk"))
