"""Zero-variance mechanism tests of device assignment (``passthrough``).

One request in the system, deterministic costs: the latency must be the sum of the steps
docs/passthrough.md lists, computed here from the parameters, and the exits per request must
follow the interrupt rules: without posted interrupts a device interrupt is a host interrupt
whose vector KVM injects (an exit on a running vCPU; a halted vCPU's HLT exit stands for it)
and whose EOI exits; with posted interrupts neither the host nor an exit is involved.
"""

from __future__ import annotations

import pytest
import simpy

from tests.helpers import wire_us
from virtlab import BlockIO, BulkStream, GuestSpec, RequestResponse, Scenario, run
from virtlab.cpu import ExecContext
from virtlab.hardware import DiskParams, HypervisorParams
from virtlab.host import RX, Host
from virtlab.paths.passthrough import PassthroughPath
from virtlab.records import EXIT_REASONS, Request
from virtlab.rng import Streams
from virtlab.units import bytes_per_us_from_gbytes_per_s, cycles_to_us

REQ, RESP, WORK = 100, 200, 7.0
INJECT, EOI = EXIT_REASONS.index("inject"), EXIT_REASONS.index("eoi")


def _wire_us(s: Scenario, nbytes: int) -> float:
    return wire_us(nbytes, s.nic)


def _copy_us(s: Scenario, nbytes: int) -> float:
    return nbytes / bytes_per_us_from_gbytes_per_s(s.host.memcpy_gbytes_per_s)


def _rr(preset: str, **hv) -> Scenario:
    return Scenario(hypervisor=HypervisorParams(cpu_support=preset, **hv), guests=(GuestSpec(
        name="g", approach="passthrough", vcpus=1, workloads=(RequestResponse(
            request_bytes=REQ, response_bytes=RESP, server_work_us=WORK),)),))


def _delivery_halted_us(s: Scenario) -> tuple[float, int, int]:
    """One device interrupt reaching a vCPU halted within halt polling: (µs, exits, eoi)."""
    h, hv = s.host, s.hypervisor
    exit_us = cycles_to_us(hv.exit_kernel_cycles, h.cpu_ghz)
    posted = hv.posted_interrupts
    eoi_exits = 0 if posted or not hv.eoi_exit else 1
    host_handler = 0.0 if posted else h.irq_us
    inject_work = 0.0 if posted else cycles_to_us(hv.irq_inject_cycles, h.cpu_ghz) - exit_us
    us = host_handler + exit_us + inject_work + h.irq_us + eoi_exits * exit_us
    return us, 1 + eoi_exits, eoi_exits


@pytest.mark.parametrize("preset", ["modern", "modern-apicv", "vtx-first-gen"])
def test_one_transaction_is_the_sum_of_its_steps(preset):
    s = _rr(preset)
    result = run(s, seed=0, max_requests=1, records=True)
    (rec,) = result.records
    h = s.host
    delivery_us, exits_per_irq, eoi_per_irq = _delivery_halted_us(s)
    latency = (s.nic.peer_stack_us + _wire_us(s, REQ)
               + delivery_us                                               # RX interrupt
               + h.stack_pkt_us + h.ctx_switch_us + h.syscall_us + _copy_us(s, REQ)
               + WORK
               + h.syscall_us + _copy_us(s, RESP) + h.stack_pkt_us        # guest stack tx
               + _wire_us(s, RESP))
    assert rec.latency_us == pytest.approx(latency, abs=1e-9)
    # Both interrupts (receive, and the transmit completion after the response left) find
    # the single vCPU halted within halt polling: each costs the HLT exit and its EOI.
    assert rec.interrupts == 2
    assert rec.exits == 2 * exits_per_irq
    assert rec.exits_eoi == 2 * eoi_per_irq
    assert rec.exits_inject == 0
    assert rec.exits_mmio == rec.exits_pio == 0  # the data path never traps
    assert rec.notifications == 0
    # Host-kernel CPU: only VFIO's MSI handler, and only without posted interrupts.
    host_us = 0.0 if s.hypervisor.posted_interrupts else 2 * h.irq_us
    assert rec.cpu_host_kernel_us == pytest.approx(host_us, abs=1e-9)
    assert rec.cpu_backend_us == 0.0


def test_posted_interrupts_remove_the_host_the_injection_and_the_eoi():
    plain = run(_rr("modern"), seed=0, max_requests=1, records=True).records[0]
    posted = run(_rr("modern-apicv"), seed=0, max_requests=1, records=True).records[0]
    s = _rr("modern")
    h, hv = s.host, s.hypervisor
    exit_us = cycles_to_us(hv.exit_kernel_cycles, h.cpu_ghz)
    inject_us = cycles_to_us(hv.irq_inject_cycles, h.cpu_ghz)
    # Per critical-path interrupt: host handler + injection work beyond the HLT exit + EOI.
    assert plain.latency_us - posted.latency_us == pytest.approx(
        h.irq_us + (inject_us - exit_us) + exit_us, abs=1e-9)
    assert (plain.exits, posted.exits) == (4, 2)


def test_past_halt_polling_the_vcpu_thread_is_woken_first():
    s = _rr("modern", halt_poll_us=0.0, vcpu_wake_latency_us=5.0)
    (rec,) = run(s, seed=0, max_requests=1, records=True).records
    base = run(_rr("modern"), seed=0, max_requests=1, records=True).records[0]
    # Only the receive interrupt is on the critical path: a thread switch and the wake latency.
    assert rec.latency_us - base.latency_us == pytest.approx(
        s.host.ctx_switch_us + 5.0, abs=1e-9)
    assert rec.exits == base.exits


def _lone_interrupt(preset: str, vcpu_busy: bool) -> Request:
    """Raise one receive interrupt on a 2-vCPU guest, with one vCPU held busy or not."""
    env = simpy.Environment()
    s = Scenario(hypervisor=HypervisorParams(cpu_support=preset))
    host = Host(env, s.host, s.nic, s.disk, s.hypervisor, Streams(0))
    vcpu = ExecContext(env, "g.vcpu", 2)
    path = PassthroughPath(host, "g", vcpu)
    path.start()
    req = Request(0, "g", "w", "passthrough", "rr", REQ, 0.0)

    def scenario_proc():
        if vcpu_busy:
            assert vcpu.acquire() is None  # a vCPU runs a guest thread throughout
        yield env.timeout(1.0)
        done = env.event()
        assert path.guest_nic.push((RX, req, REQ, done))
        yield done

    env.process(scenario_proc())
    env.run(until=100.0)
    return req


@pytest.mark.parametrize(("preset", "busy", "exits", "inject", "eoi"), [
    ("modern", True, 2, 1, 1),          # running vCPU: the injection exit and the EOI exit
    ("modern", False, 2, 0, 1),         # halted: the HLT exit stands for the injection
    ("modern-apicv", True, 0, 0, 0),    # posted: no exit at all
    ("modern-apicv", False, 1, 0, 0),   # posted, halted: only the HLT
])
def test_exits_per_interrupt_follow_the_vcpu_state_and_posted_interrupts(
        preset, busy, exits, inject, eoi):
    req = _lone_interrupt(preset, busy)
    assert (req.exits, req.exit_counts[INJECT], req.exit_counts[EOI]) == (exits, inject, eoi)


def test_running_vcpu_pays_the_whole_injection_exit():
    s = Scenario()
    h, hv = s.host, s.hypervisor
    req = _lone_interrupt("modern", True)
    inject_us = cycles_to_us(hv.irq_inject_cycles, h.cpu_ghz)
    exit_us = cycles_to_us(hv.exit_kernel_cycles, h.cpu_ghz)
    assert req.cpu_us[1] == pytest.approx(inject_us + exit_us, abs=1e-12)   # inject + EOI
    assert req.exit_reason_us[INJECT] == pytest.approx(inject_us, abs=1e-12)


@pytest.mark.parametrize("preset", ["modern", "modern-apicv"])
def test_one_block_read_is_the_sum_of_its_steps(preset):
    disk = DiskParams(service_cv=0.0)
    s = Scenario(disk=disk, hypervisor=HypervisorParams(cpu_support=preset), guests=(GuestSpec(
        name="g", approach="passthrough", vcpus=1,
        workloads=(BlockIO(block_bytes=4096, iodepth=1),)),))
    (rec,) = run(s, seed=0, max_requests=1, records=True).records
    h = s.host
    device = disk.read_access_us + 4096 / disk.interface_mbytes_per_s  # 1 MB/s = 1 B/µs
    delivery_us, exits, eoi = _delivery_halted_us(s)
    expected = (h.syscall_us + 0.5 * h.blk_io_us + device + delivery_us + 0.5 * h.blk_io_us
                + h.ctx_switch_us)
    assert rec.latency_us == pytest.approx(expected, abs=1e-9)
    assert (rec.interrupts, rec.exits, rec.exits_eoi) == (1, exits, eoi)


def test_bulk_transmit_is_link_bound_and_exits_only_for_interrupts():
    s = Scenario(duration_us=4_000.0, warmup_us=1_000.0, guests=(GuestSpec(
        name="g", approach="passthrough", vcpus=2, workloads=(BulkStream(),)),))
    result = run(s, seed=0)
    (summary,) = result.summaries
    nic = s.nic
    frame_bytes = nic.payload_per_frame_bytes + nic.frame_overhead_bytes
    goodput_gbps = nic.line_rate_gbps * nic.payload_per_frame_bytes / frame_bytes
    assert summary.throughput_bytes_per_s * 8e-9 == pytest.approx(goodput_gbps, rel=0.02)
    # Every exit belongs to an interrupt: at most inject + EOI (or HLT + EOI) per interrupt.
    assert summary.exits_per_request <= 2.0 * summary.interrupts_per_request + 1e-9
