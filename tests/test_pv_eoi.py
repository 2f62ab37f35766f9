"""KVM's paravirtual EOI (``hypervisor.pv_eoi``): no EOI exit for an MSI or an edge-triggered
interrupt; a level-triggered PCI INTx, which the IOAPIC handles, still exits (S74).

Each check runs one zero-variance request with PV EOI off and on and compares: the EOI exits
counted, and the latency, which must fall by exactly one kernel-handled exit per EOI removed
from the critical path.
"""

from __future__ import annotations

import pytest

from tests import test_exact_emulated as emulated
from tests import test_exact_passthrough as passthrough
from tests.test_exact_paravirtual import EXIT_US, scenario
from virtlab import RequestResponse, run
from virtlab.hardware import HypervisorParams
from virtlab.paths.paravirtual import ParavirtualParams


def _one(s):
    (record,) = run(s, 0, max_requests=1, records=True).records
    return record


def test_virtio_msix_eoi_does_not_exit_with_pv_eoi():
    """virtio-pci's MSI-X: the receive interrupt's EOI exit goes; one exit fewer, one exit's
    time less (the halted vCPU's HLT, the injection and the kick stay)."""
    off = _one(scenario(RequestResponse(), ParavirtualParams(),
                        hypervisor=HypervisorParams(pv_eoi=False)))
    on = _one(scenario(RequestResponse(), ParavirtualParams(),
                       hypervisor=HypervisorParams(pv_eoi=True)))
    assert (off.exits_eoi, on.exits_eoi) == (1, 0)
    assert (on.exits_mmio, on.exits_inject, on.exits_other) == (
        off.exits_mmio, off.exits_inject, off.exits_other)
    assert off.latency_us - on.latency_us == pytest.approx(EXIT_US, abs=1e-9)


def test_passthrough_msi_eoi_does_not_exit_with_pv_eoi():
    """The assigned device's MSI: both interrupts (receive, transmit done) lose their EOI
    exit; the receive interrupt's is on the critical path."""
    off = _one(passthrough._rr("modern"))
    on = _one(passthrough._rr("modern", pv_eoi=True))
    assert (off.exits_eoi, on.exits_eoi) == (2, 0)
    assert off.latency_us - on.latency_us == pytest.approx(EXIT_US, abs=1e-9)


def test_e1000_level_triggered_intx_still_exits_on_eoi():
    """The e1000's PCI INTx is level-triggered and handled by the IOAPIC: PV EOI changes
    nothing on its transaction."""
    off = emulated._one(emulated._rr(HypervisorParams(cpu_support="modern")))
    on = emulated._one(emulated._rr(HypervisorParams(cpu_support="modern", pv_eoi=True)))
    assert off.exits_eoi == on.exits_eoi == 2
    assert on.latency_us == pytest.approx(off.latency_us, abs=1e-9)


@pytest.mark.parametrize("controller", ["ahci", "ide"])
def test_ahci_msi_and_ide_edge_interrupts_do_not_exit_on_eoi(controller):
    """AHCI signals MSI, legacy IDE the edge-triggered ISA IRQ 14: their EOI does not exit."""
    hv = {"cpu_support": "modern"}
    off = emulated._one(emulated._block(HypervisorParams(**hv), disk_controller=controller))
    on = emulated._one(emulated._block(HypervisorParams(**hv, pv_eoi=True),
                                       disk_controller=controller))
    assert (off.exits_eoi, on.exits_eoi) == (1, 0)
    assert off.latency_us - on.latency_us == pytest.approx(EXIT_US, abs=1e-9)


@pytest.mark.parametrize("controller", ["ahci", "ide"])
def test_the_labs_bill_follows_pv_eoi(controller):
    """The analytic bill of a disk read (labs) drops the EOI exit the model drops."""
    from virtlab.paths.emulation.analytic import disk_read_bill
    s = emulated._block(HypervisorParams(cpu_support="modern", pv_eoi=True),
                        disk_controller=controller)
    bill = disk_read_bill(s)
    record = emulated._one(s)
    assert bill.exits["eoi"] == record.exits_eoi == 0
    assert bill.latency_us == pytest.approx(record.latency_us, abs=1e-9)
