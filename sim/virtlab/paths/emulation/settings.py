"""The ``[emulated]`` table: devices, where the device model runs, and what it costs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from virtlab.errors import ConfigError
from virtlab.params import Params, param
from virtlab.paths.emulation.accesses import (
    DISK_CONTROLLERS,
    NIC_MODELS,
    DiskModel,
    NicModel,
    builtin_disk,
    builtin_nic,
    merged_table,
)

__all__ = ["EmulatedParams"]

_SUGERMAN = "Sugerman, Venkitachalam, Lim, USENIX ATC 2001, Table 1"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatedParams(Params):
    """The emulated devices (access tables), where the device model runs, and its costs.

    ``nic`` and ``disk`` are the access tables; left unset they are the built-in tables named
    by ``nic_model`` and ``disk_controller``, and a partial table in a scenario is merged over
    the built-in one.
    """

    section = "emulated"

    nic_model: str = param("e1000", choices=NIC_MODELS, source="S17, S18",
                           doc="Emulated NIC whose built-in access table [emulated.nic] "
                               "starts from.")
    nic: NicModel = field(default=None)  # type: ignore[assignment]  # resolved in __post_init__
    disk_controller: str = param("ahci", choices=DISK_CONTROLLERS, source="S19, S20",
                                 doc="Emulated disk controller whose access table "
                                     "[emulated.disk] starts from.")
    disk: DiskModel = field(default=None)  # type: ignore[assignment]
    device_model_location: str = param(
        "user", choices=("user", "kernel"), source="S8, S21b (QEMU runs in user space)",
        doc="Where the device model runs: a user-space VMM process, or the hypervisor kernel "
            "(its accesses are then kernel-handled exits).")
    device_model_thread: str = param(
        "vcpu", choices=("vcpu", "iothread"),
        source="S18 (e1000 start_xmit runs synchronously on the exiting vCPU thread)",
        doc="Where transmits and disk submissions are processed: on the vCPU thread that "
            "exited (blocking it) or on the VMM's I/O thread.")
    device_access_cycles: float = param(
        2300.0, unit="cycles", lo=0.0, hi=1e7,
        source=f"{_SUGERMAN}: emulating the Lance status register, 3.1 µs at 733 MHz",
        doc="Device-model work per register access forwarded to it.")
    tx_frame_cycles: float = param(
        3800.0, unit="cycles", lo=0.0, hi=1e7,
        source=f"{_SUGERMAN}: emulating the Lance transmit path, 5.2 µs at 733 MHz",
        doc="Device-model work per transmitted wire frame (descriptors, software "
            "segmentation and checksum, hand-off to the tap).")
    rx_frame_cycles: float = param(
        1300.0, unit="cycles", lo=0.0, hi=1e7,
        source=f"{_SUGERMAN}: receiving via the VMNet, 1.8 µs at 733 MHz",
        doc="Device-model work per received frame (tap read, descriptor write-back).")
    disk_command_cycles: float = param(
        3800.0, unit="cycles", lo=0.0, hi=1e7,
        source="assumption (the order of tx_frame_cycles)",
        doc="Device-model work per disk command (decode, map the scatter list, AIO "
            "submit and completion).")
    dma_copies: int = param(1, lo=0, hi=8,
                            source="S18 (pci_dma_read/write: guest memory <-> model buffer)",
                            doc="Copies of each packet between guest memory and the device "
                                "model.")
    tap_copies: int = param(
        1, lo=0, hi=8,
        source="derived: a user-space model reaches the host stack by read()/write() on a tap",
        doc="Copies of each packet between the device model and a host kernel buffer.")
    disk_dma_copies: int = param(0, lo=0, hi=8,
                                 source="assumption (QEMU maps guest memory for disk DMA)",
                                 doc="Copies of each disk transfer by the device model.")
    tx_doorbell_batch: int = param(
        64, lo=1, hi=65536, source="S17 (xmit_more defers the TDT write to the end of a burst)",
        doc="Packets per transmit doorbell (1 = one doorbell per packet).")
    irq_min_interval_us: float = param(
        128.0, unit="µs", lo=0.0, hi=1e6,
        source="S100: QEMU e1000 `mitigation` (on since QEMU 1.7; off for pc-1.6 and older): "
               "the timer's 500 x 256 ns floor, which binds for a Linux guest's ITR (20000/s: "
               "195 units) and TADV (32 x 4); the disk controllers have none (S73)",
        doc="The NIC's interrupt mitigation (QEMU's e1000 `mitigation` property; 0 = off): an "
            "interrupt raised with no mitigation timer running is delivered at once and arms "
            "the timer for this long; causes raised while it runs wait for its expiry and "
            "share one interrupt. The guest's own larger ITR (Linux programs 4000/s, 250 µs, "
            "for bulk traffic) is not modelled. The disk's interrupts are never held (QEMU's "
            "AHCI and IDE do not coalesce).")

    ide_transfer: str = param(
        "dma", choices=("dma", "pio"),
        source="S19 (bus-master DMA), S101 (PIO: libata-sff, QEMU hw/ide/core.c, KVM string I/O)",
        doc="How the IDE controller moves data: bus-master DMA (one completion interrupt per "
            "command) or PIO (READ/WRITE MULTIPLE: an interrupt per block of "
            "disk.pio_block_sectors, one data-port exit per 512-byte sector whose elements "
            "the device model handles one by one). PIO needs a disk table with PIO accesses "
            "(disk_controller = \"ide\").")
    pio_element_cycles: float = param(
        150.0, unit="cycles", lo=0.0, hi=1e7,
        source="assumption (QEMU's per-element loop of a string I/O exit: "
               "address_space_rw dispatch to ide_data_readl/writel, a few hundred cycles)",
        doc="Device-model work per data-port element of a PIO transfer (128 per sector with "
            "32-bit PIO).")

    def check(self) -> None:
        """PIO needs a controller whose table has a PIO data path."""
        if self.ide_transfer == "pio" and isinstance(self.disk, DiskModel) \
                and not self.disk.has_pio:
            raise ConfigError("ide_transfer", f"'pio' needs a disk table with PIO accesses "
                                              f"(disk_controller = 'ide'), got disk_controller "
                                              f"= {self.disk_controller!r}; use 'dma'")

    def __post_init__(self) -> None:
        # Unset access tables are the built-in ones named by nic_model / disk_controller.
        if self.nic is None and isinstance(self.nic_model, str):
            object.__setattr__(self, "nic", builtin_nic(self.nic_model))
        if self.disk is None and isinstance(self.disk_controller, str):
            object.__setattr__(self, "disk", builtin_disk(self.disk_controller))
        Params.__post_init__(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmulatedParams:
        """Build from a TOML table; partial ``nic``/``disk`` tables merge over the built-ins."""
        if isinstance(data, Mapping):
            data = dict(data)
            data["nic"] = merged_table(data.get("nic_model", "e1000"), "nic", data.get("nic"))
            data["disk"] = merged_table(data.get("disk_controller", "ahci"), "disk",
                                        data.get("disk"))
        return Params.from_dict.__func__(cls, data)  # type: ignore[attr-defined, no-any-return]
