"""IDE PIO: what moving data through the data port costs (``ide_transfer = "pio"``, S101).

Linux's libata issues READ/WRITE MULTIPLE, since QEMU's IDENTIFY offers 16 sectors per DRQ
block: one interrupt per block. Each sector is one string access (``ata_pio_sector`` ->
``ata_sff_data_xfer32``: one ``rep insl``/``rep outsl``); KVM hands a ``rep ins`` of up to
1 KiB to QEMU in one exit (``pio_in_emulated``), which handles it element by element
(``ide_data_readl``), and copies the data between its I/O page and guest memory. A
``rep outs`` leaves the emulator one element at a time (``em_out``: count 1): its further
elements each return to QEMU and back into KVM without a VM entry (a user-space round trip,
not a VM exit); Xen HVM sends a string I/O as one ioreq with a count. After each block
``ata_sff_sync`` reads ALTSTATUS; a read ends with ``ata_wait_idle`` (STATUS), a write starts
with ``ata_sff_busy_wait`` (STATUS). The last element of a block runs QEMU's
``end_transfer_func``, which starts the next block's AIO in that exit.

This module only prices; :class:`~virtlab.paths.emulated.EmulatedPath` runs the blocks.
Invariant: every step's CPU time is in exactly one latency part of the same size.
"""

from __future__ import annotations

from typing import Any

from virtlab.host import Host
from virtlab.paths.emulation.exits import ExitCosts
from virtlab.paths.emulation.phases import COPIES, DEVICE_MODEL, EXITS, HOST_KERNEL
from virtlab.paths.emulation.settings import EmulatedParams
from virtlab.records import BACKEND, HOST, Request
from virtlab.units import cycles_to_us

__all__ = ["SECTOR_BYTES", "PioCosts"]

SECTOR_BYTES = 512

Work = tuple[list[Any], list[Any]]


class PioCosts:
    """The priced operations of a PIO command on the emulated IDE controller."""

    def __init__(self, host: Host, params: EmulatedParams, costs: ExitCosts) -> None:
        disk = params.disk
        self.host = host
        self.block_sectors = disk.pio_block_sectors
        self.elements = disk.pio_sector_elements
        self.sector = costs.operation("ide pio data", disk.pio_sector)
        self.block_end = costs.operation("ide pio sync", disk.pio_block_end)
        self.last = costs.operation("ide pio status", disk.pio_last)
        self.element_us = cycles_to_us(params.pio_element_cycles, host.params.cpu_ghz)
        to_user = any(costs.price(a)[2] for a in disk.pio_sector)
        #: A rep outs element after the first: a return to user space and back (KVM only).
        self.trip_us = (costs.user_exit_us - costs.kernel_exit_us
                        if to_user and not costs.xen_hvm else 0.0)

    def blocks(self, nbytes: int) -> tuple[int, ...]:
        """Sectors of each DRQ block of a request of ``nbytes`` (the last may be short)."""
        sectors = max(1, -(-nbytes // SECTOR_BYTES))
        per = self.block_sectors
        return tuple(min(per, sectors - first) for first in range(0, sectors, per))

    def transfer(self, req: Request, sectors: int, write: bool) -> Work:
        """Move one DRQ block of ``sectors`` through the data port; count its exits on req."""
        model_us = sectors * self.elements * self.element_us
        copy_us = sectors * self.host.copy_us(SECTOR_BYTES)
        trips_us = sectors * (self.elements - 1) * self.trip_us if write else 0.0
        steps: list[Any] = [*(self.sector.steps * sectors)]
        if trips_us > 0.0:
            steps.append((HOST, trips_us, "kvm: rep outs returns to the device model per "
                                          "element"))
        steps += [(BACKEND, model_us, "device model: data port, element by element"),
                  (HOST, copy_us, "kvm: copy the sector between its I/O page and the guest"),
                  *self.block_end.steps]
        parts = [*(self.sector.parts * sectors), (EXITS, trips_us), (DEVICE_MODEL, model_us),
                 (COPIES, copy_us), *self.block_end.parts]
        for _ in range(sectors):
            self.sector.count(req)
        self.block_end.count(req)
        return [s for s in steps if s[1] > 0.0], [p for p in parts if p[1] > 0.0]

    def status(self, req: Request) -> Work:
        """The closing (read) or opening (write) STATUS poll."""
        self.last.count(req)
        return list(self.last.steps), list(self.last.parts)

    def submit(self) -> Work:
        """The device model starts a block's AIO (in the exit of the block's last element)."""
        hp = self.host.params
        host_us = hp.syscall_us + 0.5 * hp.blk_io_us
        return [(HOST, host_us, "host: AIO submit of the block")], [(HOST_KERNEL, host_us)]
