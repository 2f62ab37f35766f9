"""A hosted VMM (``hypervisor.kind = "hosted"``) against a bare-metal one.

A hosted monitor (VMware Workstation's) lives beside a host OS: raising an interrupt for an I/O
its user-level device model completed takes a world switch back into the monitor, and a host
interrupt that arrives while the guest runs takes a world switch to the host. The world switch
costs what reaching the user-level device model costs beyond a trap the monitor handles itself
(``exit_user - exit_kernel``). Only the emulated path has such a monitor.
"""

from __future__ import annotations

import pytest

from virtlab import BlockIO, GuestSpec, RequestResponse, Scenario, run
from virtlab.hardware import DiskParams, HypervisorParams
from virtlab.units import cycles_to_us


def _scenario(approach: str, kind: str, workload, **guest) -> Scenario:
    return Scenario(hypervisor=HypervisorParams(kind=kind), disk=DiskParams(service_cv=0.0),
                    guests=(GuestSpec(name="g", approach=approach, workloads=(workload,),
                                      **guest),))


def _switch_us(s: Scenario) -> float:
    hv = s.hypervisor
    kernel = cycles_to_us(hv.exit_kernel_cycles, s.host.cpu_ghz)
    return kernel * hv.user_exit_factor - kernel


def _one(s: Scenario):
    (rec,) = run(s, seed=0, max_requests=1, records=True).records
    return rec


@pytest.mark.parametrize("workload", [RequestResponse(), BlockIO(iodepth=1)],
                         ids=["rr", "block"])
def test_a_device_model_completion_costs_one_world_switch(workload):
    bare = _one(_scenario("emulated", "bare-metal", workload))
    hosted_s = _scenario("emulated", "hosted", workload)
    hosted = _one(hosted_s)
    # One critical completion (the received request, the disk's data); the guest is idle when
    # the host NIC interrupts, so no switch for that.
    assert hosted.latency_us - bare.latency_us == pytest.approx(_switch_us(hosted_s), abs=1e-9)
    assert hosted.exits - bare.exits == 1
    assert hosted.cpu_exit_us - bare.cpu_exit_us == pytest.approx(_switch_us(hosted_s),
                                                                  abs=1e-9)


def test_host_interrupts_while_the_guest_runs_add_world_switches():
    # Three in flight: while one request's 40 µs of server work runs, another reaches the host
    # (with two, the e1000's 128 µs mitigation window can hold each one alone).
    busy = RequestResponse(in_flight=3, server_work_us=40.0)
    short = dict(duration_us=5_000.0, warmup_us=500.0)
    bare = run(Scenario(**short, guests=(GuestSpec(name="g", approach="emulated", vcpus=1,
                                                   workloads=(busy,)),)), seed=0)
    hosted = run(Scenario(**short, hypervisor=HypervisorParams(kind="hosted"), guests=(
        GuestSpec(name="g", approach="emulated", vcpus=1, workloads=(busy,)),)), seed=0)
    extra = hosted.summaries[0].exits_per_request - bare.summaries[0].exits_per_request
    # One switch per completed receive, and more: requests that reach the host while the
    # other one's server work runs on the only vCPU.
    assert extra > 1.2


@pytest.mark.parametrize("approach", ["native", "passthrough", "paravirtual"])
def test_only_the_emulated_path_has_a_hosted_monitor(approach):
    bare = _one(_scenario(approach, "bare-metal", RequestResponse()))
    hosted = _one(_scenario(approach, "hosted", RequestResponse()))
    assert (hosted.latency_us, hosted.exits) == (bare.latency_us, bare.exits)


def test_the_2003_testbed_profile_is_hosted():
    from virtlab.config import scenario_from_dict

    assert scenario_from_dict({}, "testbed-2003").hypervisor.kind == "hosted"
    assert Scenario().hypervisor.kind == "bare-metal"
