"""Exact, zero-variance behaviour of Xen's generations (``paravirtual.xen_generation``).

Every expected value is computed here from the parameter defaults, step by step, without
running the model's code. Xen 1.x: the guest's I/O hypercall enters the hypervisor, which
copies the header, pins the payload pages and drives the NIC and the disk itself; received
packets arrive by page flipping; Xen raises the guest's events itself (no hypercall, no
driver domain to schedule). Xen 3.x receive by page flipping costs one multicall per batch.
"""

from __future__ import annotations

import pytest

from tests.helpers import copy_us, wire_us
from tests.helpers import pv_scenario as scenario
from virtlab import BlockIO, RequestResponse, run
from virtlab.errors import ConfigError
from virtlab.hardware import DiskParams, HostParams, HypervisorParams, NicParams
from virtlab.paths.paravirtual import ParavirtualParams
from virtlab.records import PHASES

HOST = HostParams()
NIC = NicParams()
HV = HypervisorParams()
HYPERCALL_US = HV.hypercall_cycles / (HOST.cpu_ghz * 1000.0)
INJECT_US = HV.irq_inject_cycles / (HOST.cpu_ghz * 1000.0)


def flip_us(pv: ParavirtualParams, pages: int, flush_vcpus: int) -> float:
    """Three operations per flipped page and one TLB flush per batch."""
    return 3 * pages * pv.grant_op_us + pv.tlb_flush_us * flush_vcpus


def guest_upcall_us(pv: ParavirtualParams) -> float:
    """Xen delivers an event to the blocked guest: the upcall, scheduling its vCPU, handler."""
    return INJECT_US + HV.xen_domain_switch_us + HOST.irq_us


def xen1_rr_latency_us(pv: ParavirtualParams) -> float:
    """One TCP_RR transaction on Xen 1.x, step by step."""
    return (NIC.peer_stack_us / 2 + wire_us(100)                   # peer sends the request
            + HOST.irq_us + HOST.bridge_pkt_us                       # Xen: NIC irq, demux
            + pv.backend_pkt_us + flip_us(pv, 1, 1)                  # Xen flips the page
            + guest_upcall_us(pv)                                    # no EVTCHNOP_send
            + HOST.stack_pkt_us + pv.ring_op_us                      # netfront rx + stack
            + HOST.ctx_switch_us + HOST.syscall_us + copy_us(100)    # server wakes, recv
            + HOST.syscall_us + copy_us(200) + HOST.stack_pkt_us     # send + stack tx
            + pv.ring_op_us + HYPERCALL_US                           # descriptor, hypercall
            + pv.grant_op_us + copy_us(min(200, pv.xen_tx_copy_bytes))   # pin, copy header
            + pv.backend_pkt_us + HOST.bridge_pkt_us                 # VFR, NIC driver
            + pv.grant_op_us                                         # unpin
            + wire_us(200) + NIC.peer_stack_us / 2)                  # to the peer


def xen3_rr_latency_us(pv: ParavirtualParams, flip: bool) -> float:
    """One TCP_RR transaction on Xen 3.x (driver domain, map mode), step by step."""
    dom0_wake = HV.xen_domain_switch_us + INJECT_US                      # schedule dom0, upcall
    receive = (flip_us(pv, 1, pv.driver_domain_vcpus) + HYPERCALL_US if flip
               else HYPERCALL_US + pv.grant_op_us + copy_us(100))
    return (NIC.peer_stack_us / 2 + wire_us(100)
            + dom0_wake + HOST.irq_us + HOST.bridge_pkt_us           # dom0: NIC irq, bridge
            + HOST.ctx_switch_us + pv.backend_pkt_us + receive       # netback rx kthread
            + HYPERCALL_US + guest_upcall_us(pv)                     # EVTCHNOP_send, upcall
            + HOST.stack_pkt_us + pv.ring_op_us
            + HOST.ctx_switch_us + HOST.syscall_us + copy_us(100)
            + HOST.syscall_us + copy_us(200) + HOST.stack_pkt_us
            + pv.ring_op_us + HYPERCALL_US                           # grant, EVTCHNOP_send
            + dom0_wake                                              # dom0 blocked again
            + HYPERCALL_US + 2 * pv.grant_op_us + copy_us(min(200, pv.xen_tx_copy_bytes))
            + pv.backend_pkt_us + HOST.bridge_pkt_us                 # skb, bridge, NIC
            + HYPERCALL_US + pv.grant_op_us + pv.tlb_flush_us * pv.driver_domain_vcpus  # unmap
            + wire_us(200) + NIC.peer_stack_us / 2)


def test_xen1_rr_transaction_costs_the_sum_of_its_steps():
    """Xen 1.x: no driver domain to schedule, no grant operations, no event-channel hypercall
    from the backend; one I/O hypercall from the guest, a pinned page, a flipped page."""
    pv = ParavirtualParams(backend="xen", xen_generation="1.x")
    result = run(scenario(RequestResponse(), pv), 0, max_requests=1, records=True)
    (record,) = result.records
    assert record.latency_us == pytest.approx(xen1_rr_latency_us(pv), abs=1e-9)
    assert sum(getattr(record, f"lat_{p}_us") for p in PHASES) == pytest.approx(
        record.latency_us, abs=1e-9)
    assert record.notifications == 1          # the guest's transmit hypercall
    assert record.exits_other == 0            # Xen schedules the blocked vCPU: no HLT exit
    counters = result.path_stats["g"]["counters"]
    assert (counters["g.xen-net.grant_maps"], counters["g.xen-net.grant_copies"],
            counters["g.xen-net.grant_unmaps"]) == (0, 0, 0)
    assert (counters["g.xen-net.page_pins"], counters["g.xen-net.page_unpins"],
            counters["g.xen-net.page_flips"]) == (1, 1, 1)
    assert counters["g.xen-net.backend_wakeups"] == 0   # nothing to wake: Xen is the backend


@pytest.mark.parametrize("flip", [False, True])
def test_xen3_rr_transaction_costs_the_sum_of_its_steps(flip):
    """Xen 3.x, receive by grant copy or by page flipping (one multicall, a TLB flush)."""
    pv = ParavirtualParams(backend="xen", xen_rx_mode="flip" if flip else "copy")
    result = run(scenario(RequestResponse(), pv), 0, max_requests=1, records=True)
    (record,) = result.records
    assert record.latency_us == pytest.approx(xen3_rr_latency_us(pv, flip), abs=1e-9)
    counters = result.path_stats["g"]["counters"]
    # The transmit header is always grant-copied; the received page is copied or flipped.
    assert counters["g.xen-net.grant_copies"] == (1 if flip else 2)
    assert counters["g.xen-net.page_flips"] == (1 if flip else 0)
    assert counters["g.xen-net.page_pins"] == 0
    assert counters["g.xen-net.backend_wakeups"] == 2   # dom0 for tx, netback's rx kthread


def test_xen1_block_read_costs_the_sum_of_its_steps():
    """A 4 KiB read on Xen 1.x: hypercall, Xen validates and pins, the disk, unpin, event."""
    pv = ParavirtualParams(backend="xen", xen_generation="1.x")
    disk = DiskParams(service_cv=0.0)
    result = run(scenario(BlockIO(iodepth=1), pv, disk=disk), 0, max_requests=1, records=True)
    (record,) = result.records
    device = disk.read_access_us + 4096 / disk.interface_mbytes_per_s
    expected = (HOST.syscall_us + 0.5 * HOST.blk_io_us + pv.ring_op_us * 2   # request + page
                + HYPERCALL_US                                            # I/O hypercall
                + pv.backend_pkt_us + pv.grant_op_us + 0.5 * HOST.blk_io_us   # validate, pin
                + device
                + 0.5 * HOST.blk_io_us + pv.backend_pkt_us + pv.grant_op_us   # done, unpin
                + guest_upcall_us(pv)                                     # Xen raises event
                + 0.5 * HOST.blk_io_us + pv.ring_op_us                    # blkfront completion
                + HOST.ctx_switch_us)                                     # fio wakes
    assert record.latency_us == pytest.approx(expected, abs=1e-9)
    assert (record.notifications, record.interrupts) == (1, 1)
    counters = result.path_stats["g"]["counters"]
    assert (counters["g.xen-blk.grant_maps"], counters["g.xen-blk.grant_unmaps"]) == (0, 0)
    assert (counters["g.xen-blk.page_pins"], counters["g.xen-blk.page_unpins"]) == (1, 1)


def test_xen1_beats_xen3_on_one_transaction_for_the_reasons_given():
    """The difference between the generations is exactly the driver domain's scheduling and
    upcalls, netback's kthread, the backend's hypercalls and the grant work, as computed."""
    one = xen1_rr_latency_us(ParavirtualParams(backend="xen", xen_generation="1.x"))
    three = xen3_rr_latency_us(ParavirtualParams(backend="xen"), flip=False)
    got_one = run(scenario(RequestResponse(), ParavirtualParams(
        backend="xen", xen_generation="1.x")), 0, max_requests=1, records=True)
    got_three = run(scenario(RequestResponse(), ParavirtualParams(backend="xen")), 0,
                    max_requests=1, records=True)
    assert got_three.records[0].latency_us - got_one.records[0].latency_us == pytest.approx(
        three - one, abs=1e-9)
    assert three > one


@pytest.mark.parametrize("field, value", [("xen_rx_mode", "copy"), ("xen_grant_mode", "copy"),
                                          ("xen_persistent_grants", True),
                                          ("xen_blk_max_indirect_segments", 32),
                                          ("xen_blk_ring_page_order", 1)])
def test_xen1_rejects_grant_table_settings(field, value):
    """Xen 1.x had no grant tables: a grant-table setting with it is an error, not ignored."""
    with pytest.raises(ConfigError, match=field):
        ParavirtualParams(backend="xen", xen_generation="1.x", **{field: value})


REPLACED = ("virtlab: error: paravirtual.domain_switch_us: was replaced by "
            "hypervisor.xen_domain_switch_us; set that instead")


def test_the_removed_domain_switch_field_names_its_replacement(tmp_path, capsys):
    """One domain-switch cost serves every Xen path: the old paravirtual field, in a scenario
    file or in --set, is one line naming hypervisor.xen_domain_switch_us, status 2."""
    from virtlab.cli import main

    config = tmp_path / "old.toml"
    config.write_text("[paravirtual]\nbackend = 'xen'\ndomain_switch_us = 5.0\n")
    for argv in (["run", "--config", str(config)],
                 ["compare", "--set", "paravirtual.domain_switch_us=5.0"]):
        status = main(argv)
        err = capsys.readouterr().err
        assert status == 2
        assert err.strip() == REPLACED


def test_one_domain_switch_cost_for_the_paravirtual_and_hvm_paths():
    """hypervisor.xen_domain_switch_us prices the driver domain's and the guest's scheduling on
    the Xen paravirtual path: a one-transaction latency grows by exactly the switches made."""
    pv = ParavirtualParams(backend="xen", xen_rx_mode="copy")
    base = run(scenario(RequestResponse(), pv), 0, max_requests=1, records=True)
    slower = run(scenario(RequestResponse(), pv, hypervisor=HypervisorParams(
        xen_domain_switch_us=HV.xen_domain_switch_us + 10.0)), 0, max_requests=1, records=True)
    # dom0 on receive, the guest's vCPU, dom0 again for the transmit (xen3_rr_latency_us).
    assert slower.records[0].latency_us - base.records[0].latency_us == pytest.approx(
        3 * 10.0, abs=1e-9)
    assert base.records[0].latency_us == pytest.approx(xen3_rr_latency_us(pv, flip=False),
                                                       abs=1e-9)
