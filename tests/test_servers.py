"""Application servers: exact step costs, compute-side cost by preset, threads, bad input.

The exact tests recompute every cost from the raw parameters with the formulas written out
here (not by calling virtlab.compute), and compare them with what one request was charged.
"""

from __future__ import annotations

import dataclasses

import pytest

from virtlab import GuestSpec, Scenario
from virtlab.cli import main
from virtlab.compute import EVENTS, compute_costs
from virtlab.config import scenario_from_dict
from virtlab.cpusupport import PRESET_NAMES
from virtlab.errors import ConfigError
from virtlab.hardware import HostParams, HypervisorParams
from virtlab.model import run
from virtlab.paths import APPROACHES
from virtlab.records import PHASES
from virtlab.saturation import binding, find_bottleneck
from virtlab.servers import (
    ContextSwitches,
    CpuWork,
    DiskRead,
    KeyValueCache,
    OltpDatabase,
    PageFaults,
    Receive,
    Send,
    Server,
    Syscalls,
    Timers,
    TlbMisses,
    WebServer,
    compile_plan,
)

from .helpers import single_queue_disk

# Written out independently of virtlab.compute (its docstring is the specification).
SHADOW = {"binary-translation", "vtx-first-gen", "vtx-core2"}
NESTED_REFS = {"vtx-nehalem": 24, "modern": 19, "modern-apicv": 19}
WALK_REF_CYCLES, SHADOW_WORK = 10.0, 1000.0


def expected(kind: str, count: float, approach: str, preset: str, host: HostParams,
             xen: bool = False) -> tuple[float, float, int]:
    """(native µs, virtualization µs, exits) of ``count`` events of ``kind``."""
    hv = HypervisorParams(cpu_support=preset)
    us = 1.0 / (host.cpu_ghz * 1000.0)  # µs per cycle
    native = {"syscall": host.syscall_us,
              "page_fault": host.syscall_us + 4096 / (host.memcpy_gbytes_per_s * 1000.0),
              "context_switch": host.ctx_switch_us,
              "tlb_miss": 4 * WALK_REF_CYCLES * us,
              "timer": host.irq_us}[kind]
    extra, exits = 0.0, 0
    if xen and approach == "paravirtual" and preset in SHADOW:
        # XenoLinux direct paging (B03): faults via Xen + an mmu_update hypercall, CR3 loads
        # by hypercall, syscalls direct, timers as event upcalls.
        call = hv.hypercall_cycles
        extra, exits = {"syscall": (0.0, 0), "page_fault": (2 * call, 2),
                        "context_switch": (call, 1), "tlb_miss": (0.0, 0),
                        "timer": (hv.irq_inject_cycles, 1)}[kind]
        return count * native, count * extra * us, round(count * exits)
    if approach in ("paravirtual", "emulated", "passthrough"):  # every hardware VM
        e = hv.exit_kernel_cycles
        if kind == "syscall" and preset == "binary-translation":
            extra, exits = 2 * e, 0  # two VMM callouts, not hardware exits
        elif kind == "page_fault" and preset in SHADOW:
            extra, exits = 3 * (e + SHADOW_WORK), 3
        elif kind == "context_switch" and preset in SHADOW:
            extra, exits = e + SHADOW_WORK, 1
        elif kind == "tlb_miss" and preset not in SHADOW:
            extra = (NESTED_REFS[preset] - 4) * WALK_REF_CYCLES
        elif kind == "timer":
            if hv.posted_interrupts:
                extra, exits = e, 1
            else:
                extra, exits = hv.irq_inject_cycles, 1
                if hv.eoi_exit:
                    extra += e
                    exits += 1
        extra *= us
    return count * native, count * extra, round(count * exits)


STEP = {"syscall": Syscalls, "page_fault": PageFaults, "context_switch": ContextSwitches,
        "tlb_miss": TlbMisses, "timer": Timers}


def one_request(approach: str, preset: str, steps: tuple, backend: str = "vhost") -> object:
    from virtlab.paths.paravirtual import ParavirtualParams

    scenario = Scenario(
        hypervisor=HypervisorParams(cpu_support=preset),
        paravirtual=ParavirtualParams(backend=backend),
        guests=(GuestSpec(name="g", approach=approach, vcpus=1,
                          workloads=(Server(steps=steps),)),))
    result = run(scenario, seed=1, max_requests=1, records=True)
    (record,) = result.records
    return record


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("approach, backend", [(a, "vhost") for a in APPROACHES]
                         + [("paravirtual", "xen")])
def test_each_compute_step_costs_the_sum_of_its_parts(approach, backend, preset):
    host = HostParams()
    kernel = "cpu_host_kernel_us" if approach in ("native", "container") else "cpu_guest_us"
    for kind, cls in STEP.items():
        record = one_request(approach, preset, (cls(count=3.0),), backend)
        native, extra, exits = expected(kind, 3.0, approach, preset, host, backend == "xen")
        category = "cpu_guest_us" if kind == "tlb_miss" else kernel
        charged = {"cpu_guest_us": record.cpu_guest_us, "cpu_exit_us": record.cpu_exit_us,
                   "cpu_host_kernel_us": record.cpu_host_kernel_us,
                   "cpu_backend_us": record.cpu_backend_us}
        want = dict.fromkeys(charged, 0.0)
        want[category] += native
        want["cpu_exit_us"] += extra
        assert charged == pytest.approx(want, rel=1e-12, abs=1e-12), kind
        assert record.exits == exits, kind
        # The request took exactly its CPU time: nothing else ran.
        assert record.done_us - record.arrival_us == pytest.approx(native + extra, rel=1e-12)


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("approach", APPROACHES)
def test_a_compiled_request_is_the_sum_of_its_steps(approach, preset):
    host = HostParams()
    hv = HypervisorParams(cpu_support=preset)
    costs = compute_costs(approach, host, hv)
    steps = (CpuWork(us=7.5), Syscalls(count=2.0), PageFaults(count=0.5),
             ContextSwitches(count=1.0), TlbMisses(count=4.0), Timers(count=0.25))
    (op,) = compile_plan(steps, costs, 0)
    total = 7.5 + sum(sum(expected(kind, count, approach, preset, host)[:2])
                      for kind, count in (("syscall", 2.0), ("page_fault", 0.5),
                                          ("context_switch", 1.0), ("tlb_miss", 4.0),
                                          ("timer", 0.25)))
    assert op[3] == pytest.approx(total, rel=1e-12)
    assert sum(s[1] for s in op[1]) == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_native_and_containers_pay_no_compute_side_cost(preset):
    hv = HypervisorParams(cpu_support=preset)
    for approach in ("native", "container"):
        costs = compute_costs(approach, HostParams(), hv)
        assert costs.extra_us == (0.0,) * len(EVENTS)
        assert costs.extra_exits == (0,) * len(EVENTS)


def _extra(preset: str, event: str) -> float:
    costs = compute_costs("paravirtual", HostParams(), HypervisorParams(cpu_support=preset))
    return costs.extra_us[EVENTS.index(event)]


def test_presets_are_ordered_as_the_micro_benchmarks_order_them():
    # Page faults: shadow paging is far costlier than nested paging, and first-generation VT-x
    # costlier than binary translation (Adams & Agesen 2006: the hardware VMM lost on pgfault).
    assert _extra("vtx-first-gen", "page_fault") > _extra("binary-translation", "page_fault")
    # Core 2's shorter round trip makes its shadow faults cheaper than the Pentium 4's.
    assert _extra("vtx-first-gen", "page_fault") > _extra("vtx-core2", "page_fault") > 0.0
    assert _extra("vtx-nehalem", "page_fault") == _extra("modern", "page_fault") == 0.0
    # System calls: only binary translation intercepts them; hardware VT runs them natively.
    assert _extra("binary-translation", "syscall") > 0.0
    assert all(_extra(p, "syscall") == 0.0 for p in PRESET_NAMES if p != "binary-translation")
    # Context switches trap under shadow paging only.
    assert min(_extra(p, "context_switch") for p in SHADOW) > 0.0
    assert _extra("modern", "context_switch") == 0.0
    # TLB misses: the two-dimensional walk costs more, and huge host pages shorten it.
    assert _extra("vtx-nehalem", "tlb_miss") > _extra("modern", "tlb_miss") > 0.0
    assert all(_extra(p, "tlb_miss") == 0.0 for p in SHADOW)
    # A Xen PV guest's direct paging (B03) makes faults cheaper than shadow paging on the same
    # CPU, and its system calls free even on the binary-translation preset.
    for preset in SHADOW:
        pv = compute_costs("paravirtual", HostParams(), HypervisorParams(cpu_support=preset),
                           xen_pv=True)
        assert pv.extra_us[EVENTS.index("page_fault")] < _extra(preset, "page_fault")
        assert pv.extra_us[EVENTS.index("syscall")] == 0.0
    # Timers: posted interrupts remove the injection and the EOI exit.
    assert _extra("modern", "timer") > _extra("modern-apicv", "timer") > 0.0


# Threads, vCPUs and the binding resource --------------------------------------------------------
def server_scenario(workload, vcpus: int, cores: int = 32, **scenario) -> Scenario:
    return Scenario(duration_us=40_000.0, warmup_us=5_000.0, host=HostParams(cores=cores),
                    guests=(GuestSpec(name="g", approach="native", vcpus=vcpus,
                                      workloads=(workload,)),), **scenario)


def _bound(scenario: Scenario) -> tuple[float, str]:
    """Throughput over the window and the binding resource, from one run."""
    (verdict,) = find_bottleneck(scenario, seed=3)
    return verdict.throughput_per_s, verdict.binding


CPU_US = 20.0


@pytest.mark.parametrize("vcpus", [2, 4, 16])
def test_a_single_threaded_server_saturates_at_one_over_its_cpu_time(vcpus):
    workload = Server(connections=32, threads=1, steps=(
        Syscalls(count=0.0), CpuWork(us=CPU_US)))
    throughput, bound = _bound(server_scenario(workload, vcpus))
    assert throughput == pytest.approx(1e6 / CPU_US, rel=0.03)
    assert bound == "threads"


def test_n_threads_scale_until_the_disk_binds():
    one = Server(connections=32, threads=1, steps=(CpuWork(us=CPU_US),))
    four = dataclasses.replace(one, threads=4)
    t1, _ = _bound(server_scenario(one, vcpus=8))
    t4, bound4 = _bound(server_scenario(four, vcpus=8))
    assert t4 == pytest.approx(4 * t1, rel=0.03)
    assert bound4 == "threads"
    # With a single-channel disk of 100 µs per read, 8 threads cannot go past 10,000/s.
    disk_bound = Server(connections=32, threads=8, steps=(CpuWork(us=CPU_US),
                                                          DiskRead(bytes=512)))
    scenario = server_scenario(disk_bound, vcpus=8,
                               disk=single_queue_disk(100.0, 0.0))
    t8, bound8 = _bound(scenario)
    assert t8 == pytest.approx(1e6 / 100.0, rel=0.03)
    assert bound8 == "disk"


def _with_stack(scenario: Scenario, stack_pkt_us: float) -> Scenario:
    return dataclasses.replace(scenario, host=dataclasses.replace(scenario.host,
                                                                  stack_pkt_us=stack_pkt_us))


def test_a_cache_is_bound_by_the_kernel_or_the_vcpus_not_by_its_thread():
    # Natively, one receive queue's softirq work (stack_pkt_us of TCP/IP per request) runs on
    # one CPU at a time: at most 1 / stack_pkt_us requests/s, whatever the connections. At a
    # 2003-class 5 µs per segment that binds first (200,000/s); at the default (S210) the two
    # CPUs that also carry the application's wake-ups and system calls bind first. In a VM the
    # guest's two vCPUs also carry the guest kernel's network work, and bind.
    kv = server_scenario(KeyValueCache(connections=64), vcpus=2)
    slow = _with_stack(kv, 5.0)
    throughput, bound = _bound(slow)
    assert bound == "kernel loop g.nic"
    assert throughput == pytest.approx(1e6 / slow.host.stack_pkt_us, rel=0.02)
    assert _bound(slow.with_approach("paravirtual"))[1] == "vcpus"
    throughput, bound = _bound(kv)
    assert bound == "vcpus"
    assert throughput < 1e6 / kv.host.stack_pkt_us
    busy_vm = server_scenario(KeyValueCache(connections=256), vcpus=2)
    assert _bound(busy_vm.with_approach("paravirtual"))[1] == "vcpus"


def test_threads_beyond_the_vcpus_wait_for_a_cpu():
    workload = Server(connections=32, threads=8, steps=(CpuWork(us=CPU_US),))
    throughput, bound = _bound(server_scenario(workload, vcpus=2))
    assert throughput < 2 * 1e6 / CPU_US * 1.01
    assert bound == "vcpus"


# Workloads and bad input ------------------------------------------------------------------------
def test_the_three_workloads_build_from_the_vocabulary():
    kv = KeyValueCache(pipeline=4, get_fraction=0.5)
    assert [p for p, _ in kv.variants()] == [0.5, 0.5]
    web = WebServer(keep_alive=False, source="disk")
    (_, steps), = web.variants()
    kinds = [s.kind for s in steps]
    assert kinds.count("receive") == 2 and "disk_read" in kinds
    db = OltpDatabase(queries=3, hit_ratio=0.9)
    (_, steps), = db.variants()
    reads = [s for s in steps if s.kind == "disk_read"]
    assert len(reads) == 3 and all(r.bytes == 16384 for r in reads)
    assert reads[0].probability == pytest.approx(0.1)
    assert [s.kind for s in steps].count("receive") == 4  # 3 queries + the commit


@pytest.mark.parametrize("workload, field", [
    ({"kind": "oltp", "hit_ratio": -0.1}, "hit_ratio"),
    ({"kind": "kv", "connections": 0}, "connections"),
    ({"kind": "server", "steps": [{"kind": "fly"}]}, "kind"),
    ({"kind": "server", "steps": [{"kind": "syscall", "count": -1}]}, "count"),
    ({"kind": "web", "response_kib": 0}, "response_kib"),
])
def test_bad_server_input_is_one_line_and_status_2(workload, field, tmp_path, capsys):
    config = tmp_path / "bad.toml"
    import tomli_w

    config.write_text(tomli_w.dumps({"guests": [{"name": "g", "workloads": [workload]}]}))
    status = main(["run", "--config", str(config), "--duration", "1ms", "-r", "1"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("virtlab: error: ")
    assert f"{field}:" in err
    with pytest.raises(ConfigError):
        scenario_from_dict({"guests": [{"name": "g", "workloads": [workload]}]})


def test_binding_takes_the_busiest_and_breaks_near_ties_by_precedence():
    assert binding({"threads": 0.5, "vcpus": 0.6}) == "clients"
    assert binding({"kernel loop g.nic": 1.0, "vcpus": 0.9}) == "kernel loop g.nic"
    assert binding({"kernel loop g.irq": 1.0, "vcpus": 0.99}) == "vcpus"
    assert binding({"threads": 0.99, "vcpus": 1.0, "host cores": 1.0}) == "threads"
    assert binding({"disk": 0.9, "host cores": 0.97}) == "host cores"


def test_bottleneck_command_names_the_binding_resource(capsys):
    status = main(["bottleneck", "--workload", "kv", "--approaches", "native",
                   "--duration", "4ms", "--warmup", "1ms", "--set", "host.stack_pkt_us=5.0"])
    out = capsys.readouterr().out
    assert status == 0
    assert "bound by: kernel loop cache.nic" in out


def test_bottleneck_without_a_server_is_one_line_and_status_2(capsys):
    assert main(["bottleneck", "--duration", "2ms", "--warmup", "1ms"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("virtlab: error: workloads:") and err.count("\n") == 1


def test_servers_page_shows_the_current_cost_table_and_study():
    from pathlib import Path

    from virtlab.compute import cost_table_markdown
    from virtlab.studies import event_heavy_markdown

    page = (Path(__file__).resolve().parents[1] / "docs" / "servers.md").read_text()
    assert cost_table_markdown() in page, "docs/servers.md: regenerate the cost table"
    assert event_heavy_markdown() in page, "docs/servers.md: regenerate the event-heavy table"


def test_fractional_event_counts_give_the_exact_mean_number_of_exits():
    scenario = Scenario(
        hypervisor=HypervisorParams(cpu_support="vtx-first-gen"),
        guests=(GuestSpec(name="g", approach="emulated", vcpus=1,
                          workloads=(Server(steps=(PageFaults(count=0.5),)),)),))
    records = run(scenario, seed=1, max_requests=10, records=True).records
    # 0.5 faults x 3 traps = 1.5 exits per request: 15 over ten requests, as 1, 2, 1, 2, ...
    assert sum(r.exits for r in records) == 15
    assert {r.exits for r in records} == {1, 2}


# Queueing: the application thread is a server of the queue ----------------------------------
def test_a_single_thread_under_poisson_load_is_an_md1_queue():
    """Poisson arrivals, 10 µs of CPU on one thread, CPUs to spare: M/D/1 response time."""
    from virtlab import queueing
    from virtlab.stats import mean_ci

    rate_per_s, cpu_us = 70_000.0, 10.0
    server = Server(loop="open", rate_per_s=rate_per_s, threads=1,
                    steps=(CpuWork(us=cpu_us),))
    scenario = Scenario(duration_us=200_000.0, warmup_us=20_000.0, host=HostParams(cores=8),
                        guests=(GuestSpec(name="g", approach="native", vcpus=4,
                                          workloads=(server,)),))
    latencies = [run(scenario, seed=5, replication=r).summaries[0].latency_mean_us
                 for r in range(8)]
    mean, half = mean_ci(latencies, 0.999)
    lam = rate_per_s / 1e6
    assert abs(mean - queueing.md1(lam, cpu_us)["W"]) <= half
    # Power: a 10 % faster thread, or four threads' worth of capacity, is rejected.
    assert abs(mean - queueing.md1(lam, cpu_us / 1.1)["W"]) > half
    assert abs(mean - cpu_us) > half


def test_server_requests_are_conserved_and_obey_littles_law():
    scenario = Scenario(duration_us=50_000.0, warmup_us=5_000.0,
                        guests=(GuestSpec(name="g", approach="paravirtual", vcpus=2,
                                          workloads=(WebServer(loop="open", rate_per_s=20_000.0,
                                                               source="disk"),)),))
    result = run(scenario, seed=2)
    scope = "g.web"
    in_system = sum(1 for g, w, _, _ in result.in_flight if f"{g}.{w}" == scope)
    assert result.arrived[scope] == result.completed[scope] + in_system
    # Little over the whole run: area under N(t) = sum of sojourns + residual of those left.
    residual = sum(result.sim_now_us - t for g, w, _, t in result.in_flight
                   if f"{g}.{w}" == scope)
    assert result.in_flight_area[scope] == pytest.approx(result.sojourn_us[scope] + residual,
                                                         rel=1e-9)


def test_same_seed_same_result_other_seed_other_result():
    scenario = Scenario(duration_us=20_000.0, warmup_us=2_000.0,
                        guests=(GuestSpec(name="g", approach="emulated", vcpus=2,
                                          workloads=(OltpDatabase(hit_ratio=0.8),)),))
    first, again = run(scenario, seed=7), run(scenario, seed=7)
    assert first.summaries == again.summaries
    assert run(scenario, seed=8).summaries != first.summaries


@pytest.mark.parametrize("preset", ["binary-translation", "modern"])
@pytest.mark.parametrize("approach", APPROACHES)
def test_message_and_disk_steps_cost_what_the_path_charges(approach, preset):
    """receive + send is netperf's transaction; disk_read is fio's read, to the last µs."""
    from virtlab import BlockIO, RequestResponse

    from .helpers import replace_nested

    def record(workload):
        scenario = Scenario(hypervisor=HypervisorParams(cpu_support=preset),
                            guests=(GuestSpec(name="g", approach=approach, vcpus=1,
                                              workloads=(workload,)),))
        scenario = replace_nested(scenario, "disk", service_cv=0.0)
        (rec,) = run(scenario, seed=1, max_requests=1, records=True).records
        return rec

    def costs(rec):
        return (rec.cpu_guest_us, rec.cpu_exit_us, rec.cpu_backend_us, rec.cpu_host_kernel_us,
                rec.exits, rec.interrupts, rec.done_us - rec.arrival_us)

    rr = record(RequestResponse(request_bytes=100, response_bytes=200))
    server = record(Server(steps=(Receive(bytes=100), Send(bytes=200))))
    assert costs(server) == pytest.approx(costs(rr), rel=1e-12, abs=1e-12)
    fio = record(BlockIO(block_bytes=4096, read_fraction=1.0, iodepth=1))
    read = record(Server(steps=(DiskRead(bytes=4096),)))
    assert costs(read) == pytest.approx(costs(fio), rel=1e-12, abs=1e-12)


def test_compute_side_costs_appear_in_the_latency_phases():
    """Emulated path: app work is in 'guest', the shadow-paging surcharge in 'virt_compute'."""
    scenario = Scenario(
        hypervisor=HypervisorParams(cpu_support="vtx-first-gen"),
        guests=(GuestSpec(name="g", approach="emulated", vcpus=1, workloads=(Server(steps=(
            Receive(bytes=100), CpuWork(us=9.0), PageFaults(count=2.0), Send(bytes=100))),)),))
    plain = dataclasses.replace(scenario, guests=(dataclasses.replace(
        scenario.guests[0], workloads=(Server(steps=(Receive(bytes=100), Send(bytes=100))),)),))
    (rec,) = run(scenario, seed=1, max_requests=1, records=True).records
    (base,) = run(plain, seed=1, max_requests=1, records=True).records
    phases = [f"lat_{p}_us" for p in PHASES]
    assert sum(getattr(rec, p) for p in phases) == pytest.approx(rec.latency_us, rel=1e-12)
    native_us, extra_us, _ = expected("page_fault", 2.0, "emulated", "vtx-first-gen",
                                      HostParams())
    assert rec.lat_virt_compute_us == pytest.approx(extra_us, rel=1e-9)
    assert base.lat_virt_compute_us == 0.0
    assert rec.lat_exits_us == pytest.approx(base.lat_exits_us, rel=1e-9)  # the path's own
    assert rec.lat_guest_us - base.lat_guest_us == pytest.approx(9.0 + native_us, rel=1e-9)


def test_every_preset_says_how_it_virtualizes_memory():
    from virtlab.cpusupport import PAGING

    assert set(PAGING) == set(PRESET_NAMES)
    for mode in PAGING.values():
        assert mode.paging in ("shadow", "nested")
        assert (mode.nested_walk_refs > 4) == (mode.paging == "nested")
        assert mode.source


@pytest.mark.parametrize("approach", ["container", "paravirtual", "emulated"])
@pytest.mark.parametrize("vcpus", [4, 16])
def test_a_single_threaded_server_with_network_saturates_alike_on_every_approach(approach,
                                                                                  vcpus):
    """With messages through each path, the one thread still binds at 1/(its CPU time)."""
    workload = Server(connections=32, threads=1, steps=(
        Receive(bytes=100), CpuWork(us=CPU_US), Send(bytes=100)))
    throughput, bound = _bound(server_scenario(workload, vcpus).with_approach(approach))
    assert throughput == pytest.approx(1e6 / CPU_US, rel=0.03)
    assert bound == "threads"
