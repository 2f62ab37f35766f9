"""IDE PIO (``emulated.ide_transfer = "pio"``, S101): exits and CPU of one request, exactly.

With one request in the system, deterministic costs and a disk that serves in a fixed time,
a PIO read or write of N sectors in B = ceil(N / 16) DRQ blocks (READ/WRITE MULTIPLE) costs:

* exits: the 18 issue accesses; per block an interrupt (injection, 4 entry accesses, the EOI
  of the edge-triggered IDE line) and a closing ALTSTATUS; one data-port exit per sector (KVM
  hands a rep insl of a sector to QEMU in one exit); one STATUS (a read's ata_wait_idle, a
  write's ata_sff_busy_wait); and per block the HLT of the vCPU that idled while the disk
  worked;
* CPU: each of those exits; the device model's work per access, per command and per data-port
  element; the sector copies in KVM; each block's AIO submit and completion; a write's
  further element-by-element returns to QEMU (rep outs).

Every number below is computed here from the parameters, never read from the model.
"""

from __future__ import annotations

import math

import pytest

from virtlab import BlockIO, GuestSpec, Scenario, run
from virtlab.cli import main
from virtlab.hardware import DiskParams, HypervisorParams
from virtlab.paths.emulated import EmulatedParams
from virtlab.paths.emulation.accesses import builtin_disk
from virtlab.units import bytes_per_us_from_gbytes_per_s

SECTOR = 512


def _scenario(nbytes: int, write: bool, **emulated) -> Scenario:
    disk = DiskParams(kind="flash", channels=32, read_access_us=80.0, write_access_us=80.0,
                      service_cv=0.0, interface_mbytes_per_s=3000.0)
    return Scenario(
        duration_us=200_000.0,
        # No halt polling: every interrupt to the idle vCPU pays its HLT exit and the switch to
        # the sleeping vCPU thread, whatever the idle time.
        hypervisor=HypervisorParams(cpu_support="vtx-first-gen", halt_poll_us=0.0),
        emulated=EmulatedParams(disk_controller="ide", **emulated), disk=disk,
        guests=(GuestSpec(name="g", approach="emulated", vcpus=2, workloads=(
            BlockIO(block_bytes=nbytes, iodepth=1, read_fraction=0.0 if write else 1.0),)),))


def _one(scenario: Scenario):
    (record,) = run(scenario, seed=0, max_requests=1, records=True).records
    return record


def _expected(s: Scenario, nbytes: int, write: bool) -> dict[str, float]:
    h, hv, e = s.host, s.hypervisor, s.emulated
    table = builtin_disk("ide")
    cycles_per_us = h.cpu_ghz * 1000.0
    kernel_us = hv.exit_kernel_cycles / cycles_per_us
    user_us = kernel_us * hv.user_exit_factor
    access_us = e.device_access_cycles / cycles_per_us
    inject_us = hv.irq_inject_cycles / cycles_per_us
    copy_us = SECTOR / bytes_per_us_from_gbytes_per_s(h.memcpy_gbytes_per_s)
    sectors = math.ceil(nbytes / SECTOR)
    blocks = math.ceil(sectors / table.pio_block_sectors)
    elements = table.pio_sector_elements
    # Port accesses, every one forwarded to QEMU in user space.
    accesses = (len(table.pio_issue) + blocks * len(table.pio_irq_entry) + sectors
                + blocks * len(table.pio_block_end) + len(table.pio_last))
    eoi = 0 if hv.pv_eoi else 1              # the legacy IDE line is edge-triggered (S74)
    aio_us = h.syscall_us + 0.5 * h.blk_io_us + 0.5 * h.blk_io_us   # submit + completion
    trips = sectors * (elements - 1) if write else 0
    return {
        "exits_pio": accesses, "exits_inject": blocks, "exits_eoi": blocks * eoi,
        "exits_other": blocks, "exits_user": accesses, "interrupts": blocks,
        "cpu_exit_us": (accesses * user_us + blocks * (inject_us + eoi * kernel_us)
                        + blocks * kernel_us),
        "cpu_backend_us": (accesses * access_us + e.disk_command_cycles / cycles_per_us
                           + sectors * elements * e.pio_element_cycles / cycles_per_us
                           + blocks * h.ctx_switch_us),           # wake the VMM's I/O thread
        "cpu_host_kernel_us": (blocks * aio_us + sectors * copy_us
                               + blocks * h.ctx_switch_us         # wake the vCPU thread
                               + trips * (user_us - kernel_us)),
        "cpu_guest_us": (h.syscall_us + 0.5 * h.blk_io_us         # submit + block layer
                         + blocks * h.irq_us                      # interrupt entries
                         + 0.5 * h.blk_io_us + h.ctx_switch_us),  # completion, wake app
    }


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
@pytest.mark.parametrize("nbytes", [4096, 3 * 8192 + 512])   # 1 block; 4 blocks, the last short
def test_pio_request_exits_and_cpu_are_the_sum_of_their_parts(nbytes, write):
    s = _scenario(nbytes, write, ide_transfer="pio")
    record = _one(s)
    expected = _expected(s, nbytes, write)
    for name, value in expected.items():
        assert getattr(record, name) == pytest.approx(value, abs=1e-9), name
    assert record.exits == (expected["exits_pio"] + expected["exits_inject"]
                            + expected["exits_eoi"] + expected["exits_other"])
    phases = sum(getattr(record, f"lat_{p}_us") for p in (
        "guest", "exits", "device_model", "copies", "host_kernel", "device", "interrupt",
        "queueing", "outside"))
    assert phases == pytest.approx(record.latency_us, abs=1e-9)


def test_the_expectation_rejects_a_wrong_block_size():
    """The test's sum depends on the block structure: 16 sectors per DRQ block, not 8."""
    s = _scenario(3 * 8192 + 512, False, ide_transfer="pio")
    record = _one(s)
    wrong = _expected(s, 3 * 8192 + 512, False)
    table = builtin_disk("ide")
    assert table.pio_block_sectors == 16
    eight = math.ceil(math.ceil((3 * 8192 + 512) / SECTOR) / 8)
    assert record.interrupts == wrong["interrupts"] != eight


def test_pio_costs_more_exits_than_bus_master_dma():
    pio = _one(_scenario(8192, False, ide_transfer="pio"))
    dma = _one(_scenario(8192, False))
    assert pio.exits > dma.exits and pio.latency_us > dma.latency_us


def test_pio_needs_a_controller_with_a_pio_data_path(capsys):
    with pytest.raises(Exception, match="ide_transfer"):
        EmulatedParams(disk_controller="ahci", ide_transfer="pio")
    status = main(["compare", "--quiet", "--set", "emulated.ide_transfer=pio"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("virtlab: error: emulated.ide_transfer: 'pio' needs") and \
        err.count("\n") == 1
