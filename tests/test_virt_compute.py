"""What virtualization adds to a server's own compute, as its own phase, exactly.

Zero-variance settings (one request, nothing else running, a deterministic disk): the
``virt_compute`` latency phase must equal, per event, the count times the per-preset surcharge
computed here from the parameters (``tests.test_servers.expected``, written from the mechanism,
not from the model), on every approach and preset; the path's own ``recv``/``send`` system calls
pay the same syscall surcharge as a ``Syscalls`` step, once each.
"""

from __future__ import annotations

import math

import pytest

from virtlab import GuestSpec, Scenario
from virtlab.cli import main
from virtlab.cpusupport import PRESET_NAMES
from virtlab.hardware import HostParams, HypervisorParams
from virtlab.model import run
from virtlab.paths import APPROACHES
from virtlab.paths.paravirtual import ParavirtualParams
from virtlab.records import PHASES
from virtlab.servers import (
    ContextSwitches,
    CpuWork,
    PageFaults,
    Receive,
    Send,
    Server,
    Syscalls,
    Timers,
    TlbMisses,
)
from virtlab.workload import RequestResponse

from .test_servers import expected

#: One request of every kind of compute event, between a receive and a send.
COUNTS = {"syscall": 3.0, "page_fault": 2.0, "context_switch": 1.0, "tlb_miss": 5.0,
          "timer": 1.0}
STEPS = (Receive(bytes=100), Syscalls(count=COUNTS["syscall"]), CpuWork(us=4.0),
         PageFaults(count=COUNTS["page_fault"]), ContextSwitches(count=COUNTS["context_switch"]),
         TlbMisses(count=COUNTS["tlb_miss"]), Timers(count=COUNTS["timer"]), Send(bytes=200))
#: System calls the path makes for the steps above: the recv and the send.
PATH_SYSCALLS = 2


def _record(approach: str, preset: str, workload, backend: str = "vhost"):
    scenario = Scenario(
        hypervisor=HypervisorParams(cpu_support=preset),
        paravirtual=ParavirtualParams(backend=backend),
        guests=(GuestSpec(name="g", approach=approach, vcpus=1, workloads=(workload,)),))
    (record,) = run(scenario, seed=1, max_requests=1, records=True).records
    return record


def _expected_virt_us(approach: str, preset: str, xen: bool = False) -> float:
    host = HostParams()
    total = sum(expected(kind, count, approach, preset, host, xen)[1]
                for kind, count in COUNTS.items())
    return total + expected("syscall", PATH_SYSCALLS, approach, preset, host, xen)[1]


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("approach, backend", [(a, "vhost") for a in APPROACHES]
                         + [("paravirtual", "xen")])
def test_the_virt_compute_phase_is_each_event_times_its_surcharge(approach, backend, preset):
    record = _record(approach, preset, Server(steps=STEPS), backend)
    want = _expected_virt_us(approach, preset, backend == "xen")
    if approach in ("native", "container"):
        # No surcharge at all: nothing is charged as virtualization CPU (these paths do not
        # split latency into phases, so every phase is NaN there).
        assert want == 0.0
        assert record.cpu_exit_us == 0.0
        assert math.isnan(record.lat_virt_compute_us)
        return
    phases = [getattr(record, f"lat_{p}_us") for p in PHASES]
    if any(math.isnan(v) for v in phases):
        # A path that does not split latency (passthrough): the surcharge is still all CPU
        # time of category 'exit' beyond what the same request without compute steps costs.
        bare = _record(approach, preset, Server(steps=(STEPS[0], STEPS[-1])), backend)
        steps_only = want - expected("syscall", PATH_SYSCALLS, approach, preset, HostParams(),
                                     backend == "xen")[1]
        assert record.cpu_exit_us - bare.cpu_exit_us == pytest.approx(steps_only, rel=1e-9)
        return
    assert sum(phases) == pytest.approx(record.latency_us, rel=1e-12)
    assert record.lat_virt_compute_us == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("approach", ["passthrough", "paravirtual", "emulated"])
def test_the_paths_recv_and_send_pay_the_syscall_surcharge_once(approach, preset):
    """A netperf-like transaction and the same server steps: the same bill, surcharge included.

    The difference between a request with and without the two socket calls' surcharge is the
    surcharge of two system calls, and a ``Syscalls`` step of one call costs that again: no
    call pays twice, none pays nothing.
    """
    host = HostParams()
    per_call_us = expected("syscall", 1.0, approach, preset, host)[1]
    rr = _record(approach, preset, RequestResponse(request_bytes=100, response_bytes=200,
                                                   server_work_us=0.0))
    server = _record(approach, preset, Server(steps=(Receive(bytes=100), Send(bytes=200))))
    with_call = _record(approach, preset, Server(steps=(Receive(bytes=100), Syscalls(count=1.0),
                                                        Send(bytes=200))))
    assert server.latency_us == pytest.approx(rr.latency_us, rel=1e-12)
    assert server.cpu_exit_us == pytest.approx(rr.cpu_exit_us, rel=1e-12)
    native_us = expected("syscall", 1.0, approach, preset, host)[0]
    assert with_call.latency_us - server.latency_us == pytest.approx(native_us + per_call_us,
                                                                     rel=1e-9)
    if not math.isnan(server.lat_virt_compute_us):
        assert server.lat_virt_compute_us == pytest.approx(PATH_SYSCALLS * per_call_us,
                                                           rel=1e-12, abs=1e-12)


def test_binary_translation_makes_syscall_heavy_work_costlier_than_vtx():
    """A request/response with many system calls: BT pays two callouts per call, VT-x none."""
    steps = (Receive(bytes=100), Syscalls(count=20.0), Send(bytes=100))
    bt = _record("emulated", "binary-translation", Server(steps=steps))
    vtx = _record("emulated", "vtx-first-gen", Server(steps=steps))
    host = HostParams()
    assert bt.lat_virt_compute_us == pytest.approx(
        expected("syscall", 22.0, "emulated", "binary-translation", host)[1], rel=1e-12)
    assert vtx.lat_virt_compute_us == 0.0
    assert bt.lat_virt_compute_us > 22 * 0.5  # ~0.67 µs per call at 3 GHz
    # The I/O path's own part does not decide it: without the calls BT is not the slower one
    # by the compute surcharge (it is the path's exits that differ).
    bare = (Receive(bytes=100), Send(bytes=100))
    bt_bare = _record("emulated", "binary-translation", Server(steps=bare))
    assert bt.latency_us - bt_bare.latency_us > (
        vtx.latency_us - _record("emulated", "vtx-first-gen", Server(steps=bare)).latency_us)


def test_trace_and_breakdown_show_the_virt_compute_phase(capsys):
    cache = 'guests=[{name = "cache", vcpus = 2, workloads = [{kind = "kv"}]}]'
    assert main(["trace", "--set", cache, "--approach", "emulated", "--cpu-support",
                 "binary-translation"]) == 0
    out = capsys.readouterr().out
    # Event by event: the epoll_wait step's and the path's recv/send surcharges ...
    for call in ("recv", "epoll_wait", "send"):
        assert f"virt: {call} (binary translation: 2 VMM callouts)" in out, out
    # ... and in the request's "where the time went" line, as their own phase.
    (line,) = [x for x in out.splitlines() if "went:" in x]
    host = HostParams()
    want = expected("syscall", 3.0, "emulated", "binary-translation", host)[1]
    assert f"virt_compute {want:.3f}" in line, line
    assert main(["compare", "--breakdown", "--workload", "kv", "--cpu-support",
                 "binary-translation", "--duration", "3ms", "--warmup", "1ms", "-r", "1",
                 "--approaches", "native,emulated"]) == 0
    out = capsys.readouterr().out
    header = [x for x in out.splitlines() if "virt.cpu" in x]
    assert header, out


# Task: an invalid Xen HVM combination is one line and status 2 (style of test_hostile_inputs).
@pytest.mark.parametrize(("argv", "field"), [
    (["compare", "--set", "hypervisor.vmm=xen-hvm", "--set",
      "emulated.device_model_location=kernel"], "emulated.device_model_location"),
    (["compare", "--approaches", "emulated", "--set", "hypervisor.vmm=xen-hvm",
      "--set", "emulated.device_model_location=kernel"], "emulated.device_model_location"),
    (["trace", "--approach", "emulated", "--set", "hypervisor.vmm=xen-hvm", "--set",
      "emulated.device_model_location=kernel"], "emulated.device_model_location"),
    (["compare", "--set", "hypervisor.vmm=xen-hvm", "--cpu-support", "binary-translation"],
     "hypervisor.cpu_support"),
    (["compare", "--set", "hypervisor.vmm=xen-hvm", "--set", "hypervisor.kind=hosted"],
     "hypervisor.kind"),
], ids=["compare", "compare-emulated", "trace", "bt", "hosted"])
def test_an_invalid_xen_hvm_combination_is_one_line_and_status_2(argv, field, capsys):
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, (out[-300:], err)
    assert out == "", "nothing may be printed (or run) before the error"
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"virtlab: error: {field}"), lines[0]


# One basis for exit costs (cpusupport, S161) ---------------------------------------------------
def test_every_exit_cost_is_the_round_trip_plus_its_handling():
    for preset in PRESET_NAMES:
        hv = HypervisorParams(cpu_support=preset)
        assert hv.exit_kernel_cycles == hv.exit_roundtrip_cycles + hv.exit_handling_cycles
        assert hv.hypercall_cycles == hv.exit_roundtrip_cycles + hv.hypercall_handling_cycles
        assert hv.irq_inject_cycles == hv.exit_roundtrip_cycles + hv.inject_handling_cycles
    # A changed round trip moves every derived cost; a derived cost set on purpose wins.
    hv = HypervisorParams(exit_roundtrip_cycles=1000.0)
    assert hv.exit_kernel_cycles == 1000.0 + hv.exit_handling_cycles
    assert hv.irq_inject_cycles == 1000.0 + hv.inject_handling_cycles
    hv = HypervisorParams(exit_roundtrip_cycles=1000.0, exit_kernel_cycles=1234.0)
    assert hv.exit_kernel_cycles == 1234.0
    assert hv.hypercall_cycles == 1000.0 + hv.hypercall_handling_cycles


def test_the_round_trips_are_the_measured_ones_and_the_handling_their_difference():
    """S162 round trips and AA06; handling = a whole KVM exit minus its CPU's round trip."""
    got = {p: HypervisorParams(cpu_support=p) for p in PRESET_NAMES}
    assert got["vtx-first-gen"].exit_roundtrip_cycles == 2409.0           # AA06, Pentium 4
    assert got["vtx-core2"].exit_roundtrip_cycles == 1118.0               # S162, Penryn
    assert got["vtx-nehalem"].exit_roundtrip_cycles == 950.0              # S162, Nehalem
    assert 516.0 <= got["modern"].exit_roundtrip_cycles <= 636.0           # S162, Skylake-SP
    # Whole KVM exits are kept: SplitX's ~2,000 on Nehalem, S23's 1,050, S24, S25 today.
    assert got["vtx-nehalem"].exit_kernel_cycles == 2000.0
    assert (got["modern"].exit_kernel_cycles, got["modern"].hypercall_cycles,
            got["modern"].irq_inject_cycles) == (1050.0, 1550.0, 3300.0)
    # Binary translation's callout was measured whole (SU01): no separate handling.
    assert got["binary-translation"].exit_handling_cycles == 0.0


@pytest.mark.parametrize("field, value", [("cpu_support", "vtx-first-gen"),
                                          ("cpu_support", "binary-translation"),
                                          ("exit_roundtrip_cycles", 2000.0)])
def test_a_sweep_over_the_preset_or_the_round_trip_rederives_the_exit_costs(field, value):
    from virtlab.config import scenario_from_dict
    from virtlab.sweep import iter_grid, sweep

    base = Scenario(duration_us=2000.0, warmup_us=500.0)
    # What a sweep's point gets (the base scenario's effective values, one field varied) ...
    result = sweep(base, {f"hypervisor.{field}": [value]}, ["emulated"], replications=1,
                   jobs=1, store=None)
    ((_, values),) = list(iter_grid({f"hypervisor.{field}": [value]}))
    (point,) = list(result)
    assert point.error is None
    hv = point.comparison.results[0].scenario.hypervisor
    # ... is what building that value from scratch gives: no cost pinned by the old preset.
    assert hv == HypervisorParams(**{field: value})
    assert values == {f"hypervisor.{field}": value}
    assert scenario_from_dict(base.to_dict()).hypervisor == base.hypervisor
