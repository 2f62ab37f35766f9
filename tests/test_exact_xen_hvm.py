"""Xen HVM (``hypervisor.vmm = "xen-hvm"``): the emulated path's exact bill under Xen.

Each access for the device model exits to Xen, which writes the request to the shared ioreq
page and signals qemu-dm in dom0 through an event channel: Xen switches to dom0's vCPU and
upcalls it, dom0 wakes qemu-dm, which reads and unmasks the port (two syscalls), emulates, and
notifies back (an ioctl making a hypercall); Xen switches back to the guest's vCPU. qemu-dm
raises interrupts with a hypercall; a halted vCPU is scheduled back by Xen (no halt polling).
The expected values are the emulated path's documented sums (``tests/test_exact_emulated.py``)
with these prices, computed here from the parameters.
"""

from __future__ import annotations

import pytest

from tests import test_exact_emulated as exact
from virtlab.errors import ConfigError
from virtlab.hardware import HypervisorParams


class HvmCosts(exact.Costs):
    """Per-access and wake-up prices under Xen HVM."""

    def __init__(self, s) -> None:
        super().__init__(s)
        h, hv = s.host, s.hypervisor
        ghz_cycles = h.cpu_ghz * 1000.0
        self.hypercall = hv.hypercall_cycles / ghz_cycles
        self.round_trip = (hv.xen_domain_switch_us          # Xen runs dom0's vCPU
                           + self.inject                    # upcall into dom0
                           + h.ctx_switch_us                # dom0 wakes qemu-dm
                           + 2 * h.syscall_us               # read the port, unmask it
                           + h.syscall_us + self.hypercall  # notify: ioctl + EVTCHNOP_send
                           + hv.xen_domain_switch_us)       # Xen runs the guest's vCPU again

    def access_us(self, access) -> tuple[float, float, bool]:
        if access.handler == "hypervisor":
            return self.kernel, 0.0, False
        return self.kernel + self.round_trip, self.access, True   # never coalesced

    def vcpu_wake(self, idle_us: float) -> float:
        return self.kernel + self.s.hypervisor.xen_domain_switch_us   # HLT exit, Xen schedules


def _hvm_rr_expected(s, monkeypatch) -> tuple[float, dict[str, float]]:
    monkeypatch.setattr(exact, "Costs", HvmCosts)
    latency, phases = exact._rr_expected(s)
    raise_us = HvmCosts(s).hypercall          # qemu-dm raises the receive interrupt
    phases["interrupt"] += raise_us
    return latency + raise_us, phases


@pytest.mark.parametrize("preset", ["vtx-first-gen", "modern"])
def test_hvm_transaction_latency_is_the_sum_of_its_steps(preset, monkeypatch):
    scenario = exact._rr(HypervisorParams(cpu_support=preset, vmm="xen-hvm"))
    record = exact._one(scenario)
    latency, phases = _hvm_rr_expected(scenario, monkeypatch)
    assert record.latency_us == pytest.approx(latency, abs=1e-9)
    exact._check_phases(record, phases)
    # The same exits as under KVM, but every device-model access reaches qemu-dm (no
    # coalescing), and no halt polling: the HLT is still an exit.
    nic = scenario.emulated.nic
    accesses = 2 * (nic.irq_entry + nic.irq_exit) + nic.rx_refill + nic.tx_doorbell
    assert record.exits_user == sum(a.handler != "hypervisor" for a in accesses)
    assert record.exits_other == 1


def test_hvm_is_slower_than_kvm_by_the_ioreq_round_trips(monkeypatch):
    """The difference from KVM on one transaction is, per device-model access, the ioreq round
    trip instead of KVM's return to QEMU on the same thread, plus qemu-dm's interrupt hypercall
    and Xen's scheduling of the halted vCPU instead of KVM's thread wake-up."""
    kvm_s = exact._rr(HypervisorParams(cpu_support="modern", halt_poll_us=0.0))
    hvm_s = exact._rr(HypervisorParams(cpu_support="modern", halt_poll_us=0.0, vmm="xen-hvm"))
    kvm, hvm = exact._one(kvm_s), exact._one(hvm_s)
    kvm_expected, _ = exact._rr_expected(kvm_s)
    hvm_expected, _ = _hvm_rr_expected(hvm_s, monkeypatch)
    assert hvm.latency_us - kvm.latency_us == pytest.approx(hvm_expected - kvm_expected,
                                                            abs=1e-9)
    c = HvmCosts(hvm_s)
    # Per forwarded access the round trip costs several times KVM's user-space exit.
    assert c.kernel + c.round_trip > 2 * c.user
    assert hvm.latency_us > kvm.latency_us + 10.0


@pytest.mark.parametrize("controller", ["ahci", "ide"])
def test_hvm_disk_read_is_the_sum_of_its_steps(controller, monkeypatch):
    scenario = exact._block(HypervisorParams(cpu_support="vtx-first-gen", vmm="xen-hvm"),
                            disk_controller=controller)
    record = exact._one(scenario)
    monkeypatch.setattr(exact, "Costs", HvmCosts)
    latency, phases = exact._block_expected(scenario)
    raise_us = HvmCosts(scenario).hypercall
    phases["interrupt"] += raise_us
    assert record.latency_us == pytest.approx(latency + raise_us, abs=1e-9)
    exact._check_phases(record, phases)


def test_hvm_rejects_a_hosted_monitor_and_an_in_hypervisor_device_model():
    with pytest.raises(ConfigError, match="kind"):
        HypervisorParams(vmm="xen-hvm", kind="hosted")
    # Rejected when the scenario is built (before any run), not as a failed point.
    with pytest.raises(ConfigError, match="device_model_location"):
        exact._rr(HypervisorParams(vmm="xen-hvm"), device_model_location="kernel")
    with pytest.raises(ConfigError, match="cpu_support"):
        HypervisorParams(vmm="xen-hvm", cpu_support="binary-translation")


@pytest.mark.parametrize("preset", ["vtx-first-gen", "modern"])
def test_the_labs_bills_agree_with_the_model_under_xen_hvm(preset):
    """The analytic bills (labs) price the ioreq round trips, qemu-dm's interrupt hypercall
    and Xen's scheduling of the halted vCPU as the model does."""
    from virtlab.paths.emulation.analytic import disk_read_bill, transaction_bill

    hv = HypervisorParams(cpu_support=preset, vmm="xen-hvm")
    rr = exact._rr(hv)
    bill, record = transaction_bill(rr, exact.REQ, exact.RESP), exact._one(rr)
    assert bill.latency_us == pytest.approx(record.latency_us, abs=1e-9)
    assert (sum(bill.exits.values()), bill.user_exits) == (record.exits, record.exits_user)
    for phase, value in bill.by_phase().items():
        assert getattr(record, f"lat_{phase}_us") == pytest.approx(value, abs=1e-9), phase
    disk = exact._block(hv, disk_controller="ide")
    assert disk_read_bill(disk, exact.BLOCK).latency_us == pytest.approx(
        exact._one(disk).latency_us, abs=1e-9)
