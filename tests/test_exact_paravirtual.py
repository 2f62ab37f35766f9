"""Exact, zero-variance behaviour of the paravirtual path.

Every expected value is computed here from the parameter defaults, step by step, without
running the model's code: one request's latency is the sum of its steps; a burst to a busy
backend costs the kicks the suppression rule allows; completions published in one flush cost
one interrupt; Xen's grant operations follow the grant mode.
"""

from __future__ import annotations

import math

import pytest

from tests.helpers import copy_us, wire_us
from tests.helpers import pv_scenario as scenario
from virtlab import BlockIO, BulkStream, RequestResponse, run
from virtlab.hardware import DiskParams, HostParams, HypervisorParams, NicParams
from virtlab.paths.paravirtual import ParavirtualParams
from virtlab.records import PHASES

HOST = HostParams()
NIC = NicParams()
HV = HypervisorParams()
EXIT_US = HV.exit_kernel_cycles / (HOST.cpu_ghz * 1000.0)
INJECT_US = HV.irq_inject_cycles / (HOST.cpu_ghz * 1000.0)


def vcpu_wake_us(idle_us: float, hv: HypervisorParams) -> float:
    """Delivering an interrupt to a vCPU idle for ``idle_us``: the HLT exit and, once halt
    polling gave up, the host's switch to the sleeping vCPU thread and its wake latency."""
    thread = HOST.ctx_switch_us + hv.vcpu_wake_latency_us if idle_us > hv.halt_poll_us else 0.0
    return EXIT_US + thread


def rr_latency_us(pv: ParavirtualParams, hv: HypervisorParams) -> float:
    """One TCP_RR transaction through virtio-net + vhost, step by step."""
    wake = HOST.ctx_switch_us + pv.vhost_wake_latency_us   # vhost worker sleeps between packets
    # The vCPU has been idle since t = 0: halt polling catches the interrupt if it is recent.
    idle_us = (NIC.peer_stack_us / 2 + wire_us(100) + HOST.irq_us + HOST.bridge_pkt_us + wake
               + pv.backend_pkt_us + copy_us(100) + INJECT_US)
    return (NIC.peer_stack_us / 2 + wire_us(100)                     # peer sends the request
            + HOST.irq_us + HOST.bridge_pkt_us                         # host NIC irq, bridge, tap
            + wake + pv.backend_pkt_us + copy_us(100)                  # vhost: into the rx buffer
            + INJECT_US                                                # irqfd injection
            + vcpu_wake_us(idle_us, hv) + HOST.irq_us + EXIT_US        # halted vCPU, irq, EOI
            + HOST.stack_pkt_us + pv.ring_op_us                        # NAPI: reap + stack rx
            + HOST.ctx_switch_us + HOST.syscall_us + copy_us(100)      # server wakes, recv
            + HOST.syscall_us + copy_us(200) + HOST.stack_pkt_us       # send + stack tx
            + pv.ring_op_us + EXIT_US                                  # add chain, kick
            + wake + pv.backend_pkt_us + copy_us(200) + HOST.bridge_pkt_us  # vhost tx
            + wire_us(200) + NIC.peer_stack_us / 2)                    # to the peer


#: (vhost worker wake latency, halt-polling window, vCPU thread wake latency); distinct values,
#: so that a latency charged to the wrong thread shows.
WAKE_CASES = {
    "modern-halt-polling": (0.0, HV.halt_poll_us, 0.0),
    "idle-within-halt-polling": (3.0, HV.halt_poll_us, 5.0),
    "idle-past-halt-polling": (3.0, 0.0, 1.5),
}


def wake_params(case: str) -> tuple[ParavirtualParams, HypervisorParams]:
    vhost_us, poll_us, vcpu_us = WAKE_CASES[case]
    return (ParavirtualParams(vhost_wake_latency_us=vhost_us),
            HypervisorParams(halt_poll_us=poll_us, vcpu_wake_latency_us=vcpu_us))


@pytest.mark.parametrize("case", list(WAKE_CASES))
def test_one_rr_transaction_costs_the_sum_of_its_steps(case):
    """One request/response through vhost takes exactly the sum of its steps."""
    pv, hv = wake_params(case)
    result = run(scenario(RequestResponse(), pv, hypervisor=hv), 0, max_requests=1, records=True)
    (record,) = result.records
    assert record.latency_us == pytest.approx(rr_latency_us(pv, hv), abs=1e-9)
    # With napi_tx (Linux 5.3 on, the default) the reply's used chain raises a TX interrupt
    # too, after the reply left (no latency; its poll runs for nobody): one more injection and
    # one more wake-up of the halted vCPU.
    tx_irq = int(pv.napi_tx)
    assert (record.notifications, record.interrupts) == (1, 1 + tx_irq)
    # Kick (MMIO notify), injection(s), EOI and the HLT of the idle vCPU.
    assert (record.exits_mmio, record.exits_inject, record.exits_eoi, record.exits_other) == (
        1, 1 + tx_irq, 1, 1)
    assert result.path_stats["g"]["counters"]["vcpu_wakeups"] == 1 + tx_irq
    phases = [getattr(record, f"lat_{p}_us") for p in PHASES]
    assert sum(phases) == pytest.approx(record.latency_us, abs=1e-9)
    assert record.lat_exits_us == pytest.approx(EXIT_US, abs=1e-9)          # the kick
    assert record.lat_device_us == pytest.approx(wire_us(200), abs=1e-9)   # the reply's wire


# One block read's steps, for every virtio-blk back-end: tests/test_virtio_blk_backends.py.


def kicks_in_burst(n: int, event_idx: bool, ctx_switch_us: float) -> int:
    """The kick rule applied by hand to n block submissions from one vCPU.

    Each submission takes ``submit`` µs of guest CPU, then publishes its chain. With event index
    only the first crosses ``avail_event`` (the backend stays busy for the whole burst). With
    flag hints, every chain published before the woken backend has run and set NO_NOTIFY
    kicks too; each kick costs the vCPU one exit.
    """
    submit = HOST.syscall_us + 0.5 * HOST.blk_io_us + ParavirtualParams().ring_op_us
    t = 0.0
    kicks = 0
    notify_off_at = math.inf
    for k in range(n):
        t += submit
        if k == 0 or (not event_idx and t < notify_off_at):
            t += EXIT_US
            kicks += 1
            if k == 0:
                notify_off_at = t + ctx_switch_us   # the worker wakes, then disables
    return kicks


@pytest.mark.parametrize("event_idx", [True, False])
@pytest.mark.parametrize("ctx_switch_us", [2.0, 10.0])
def test_burst_to_a_busy_backend_costs_what_the_rule_says(event_idx, ctx_switch_us):
    """Event index: a burst of N requests to a busy backend costs one kick; flag hints also
    kick for every request published while the backend is still waking up."""
    n = 16
    pv = ParavirtualParams(event_idx=event_idx, backend_pkt_us=20.0)   # a slow, busy backend
    host = HostParams(ctx_switch_us=ctx_switch_us)
    result = run(scenario(BlockIO(iodepth=n), pv, host=host,
                          disk=DiskParams(service_cv=0.0)), 0, max_requests=n, records=True)
    assert len(result.records) == n
    kicks = sum(r.notifications for r in result.records)
    assert kicks == kicks_in_burst(n, event_idx, ctx_switch_us)
    if event_idx:
        assert kicks == 1


@pytest.mark.parametrize("kind", ["qemu-threads", "qemu-aio", "qemu-io-uring",
                                  "vhost-user-blk"])
@pytest.mark.parametrize("n", [1, 8, 32, 64])
def test_completions_published_in_one_flush_cost_one_interrupt(n, kind):
    """The backend finishes all N completions before it publishes used.idx: one interrupt.

    The back-end thread wakes 200 µs after the kick, so the whole burst is queued when it
    pops (one submission batch) and the instant disk finishes all of it at once."""
    disk = DiskParams(read_access_us=0.0, service_cv=0.0, interface_mbytes_per_s=1e6)
    pv = ParavirtualParams(blk_backend=kind, blk_iothread_poll_us=0.0,
                           vhost_wake_latency_us=200.0)
    result = run(scenario(BlockIO(iodepth=n), pv, disk=disk), 0, max_requests=n, records=True)
    assert len(result.records) == n
    assert sum(r.interrupts for r in result.records) == 1
    ring = result.path_stats["g"]["rings"]["g.virtio-blk.vq"]
    assert ring["max_occupancy"] == n


def test_a_transmit_burst_kicks_once_at_its_end():
    """Without TSO an 8 KiB send is 6 packets: 6 chains, one kick, one backend batch of 6."""
    nic = NicParams(tso_bytes=1448)
    stream = BulkStream(message_bytes=8192, window_bytes=8192)
    result = run(scenario(stream, ParavirtualParams(), nic=nic), 0, max_requests=20, records=True)
    assert len(result.records) == 20
    assert all(r.notifications == 1 for r in result.records)
    assert result.path_stats["g"]["rings"]["g.virtio-net.txq"]["batch_sizes"] == {6: 20}


@pytest.mark.parametrize("mode, maps", [("map", 1), ("copy", 0)])
def test_xen_transmit_grant_operations_follow_the_grant_mode(mode, maps):
    """netback copies the header and maps the page (map mode), or copies it all (copy mode)."""
    pv = ParavirtualParams(backend="xen", xen_grant_mode=mode)
    result = run(scenario(RequestResponse(), pv), 0, max_requests=1, records=True)
    counters = result.path_stats["g"]["counters"]
    assert counters["g.xen-net.grant_maps"] == maps
    assert counters["g.xen-net.grant_unmaps"] == maps
    # The transmit page is copied (header or all); the receive page is always grant-copied.
    assert counters["g.xen-net.grant_copies"] == 2
    (record,) = result.records
    assert record.notifications == 1      # one event channel send for the transmit request
    assert sum(getattr(record, f"lat_{p}_us") for p in PHASES) == pytest.approx(
        record.latency_us, abs=1e-9)


@pytest.mark.parametrize("persistent, maps", [(False, 3), (True, 1)])
def test_xen_persistent_grants_map_each_page_once(persistent, maps):
    """Three sequential 4 KiB reads: map/unmap per request, or one persistent mapping."""
    pv = ParavirtualParams(backend="xen", xen_persistent_grants=persistent)
    result = run(scenario(BlockIO(iodepth=1), pv, disk=DiskParams(service_cv=0.0)), 0,
                 max_requests=3, records=True)
    counters = result.path_stats["g"]["counters"]
    assert counters["g.xen-blk.grant_maps"] == maps
    assert counters["g.xen-blk.grant_unmaps"] == (0 if persistent else 3)
    assert all((r.notifications, r.interrupts) == (1, 1) for r in result.records)


def test_xen_schedules_the_blocked_guest_vcpu_instead_of_waking_a_kvm_thread():
    """Under Xen the idle guest's vCPU is scheduled (``domain_switch_us``): KVM's halt polling
    and vCPU thread wake latency do not apply, and the wake-up is no VM exit."""
    pv = ParavirtualParams(backend="xen")
    kvm_free = run(scenario(RequestResponse(), pv), 0, max_requests=1, records=True)
    no_polling = run(scenario(RequestResponse(), pv, hypervisor=HypervisorParams(
        halt_poll_us=0.0, vcpu_wake_latency_us=50.0)), 0, max_requests=1, records=True)
    assert no_polling.records[0].latency_us == kvm_free.records[0].latency_us
    assert no_polling.records[0].exits_other == 0
    # The receive upcall and netback's transmit-response upcall both find the guest blocked.
    assert no_polling.path_stats["g"]["counters"]["vcpu_wakeups"] == 2
    # Every domain switch on the path (the guest's vCPU and the driver domain's) costs the same.
    slower = run(scenario(RequestResponse(), pv, hypervisor=HypervisorParams(
        xen_domain_switch_us=12.0)), 0, max_requests=1, records=True)
    assert slower.records[0].latency_us > kvm_free.records[0].latency_us


@pytest.mark.parametrize("napi_tx", [False, True])
def test_napi_tx_takes_a_transmit_interrupt_after_the_kicked_reply(napi_tx):
    """With napi_tx the driver re-enables transmit callbacks at each kicked transmit, so the
    reply's used chain raises a TX interrupt (after the reply left: the latency is the same)
    that wakes the halted vCPU; without it the chain waits for the next transmit."""
    pv = ParavirtualParams(napi_tx=napi_tx)
    result = run(scenario(RequestResponse(), pv), 0, max_requests=1, records=True)
    (record,) = result.records
    assert record.latency_us == pytest.approx(rr_latency_us(pv, HV), abs=1e-9)
    assert record.interrupts == 1 + napi_tx
    assert result.path_stats["g"]["counters"]["vcpu_wakeups"] == 1 + napi_tx
    # Only the receive interrupt's EOI exit is the request's own (the TX poll runs for nobody).
    assert record.exits_eoi == 1


def test_napi_tx_bulk_stream_takes_transmit_interrupts_only_with_napi_tx():
    """A transmitting stream whose queue never stops: no TX interrupt without napi_tx, at most
    one per kicked burst with it (vhost's signal suppression may merge them)."""
    # One-way (acks=False): the peer's ACKs would add receive interrupts (tests/test_tcp_acks.py).
    stream = BulkStream(message_bytes=8192, window_bytes=8192, acks=False)
    nic = NicParams(tso_bytes=1448)
    counts = {}
    for napi_tx in (False, True):
        result = run(scenario(stream, ParavirtualParams(napi_tx=napi_tx), nic=nic), 0,
                     max_requests=20, records=True)
        counts[napi_tx] = sum(r.interrupts for r in result.records)
        kicks = sum(r.notifications for r in result.records)
    assert counts[False] == 0
    assert 0 < counts[True] <= kicks
