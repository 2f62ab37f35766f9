"""Zero-variance mechanism tests: one request through the native and container paths.

With deterministic costs and one request in the system, the latency must equal the sum of the
steps the path's documentation lists, computed here independently from the parameters.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import wire_us
from virtlab import BlockIO, GuestSpec, RequestResponse, Scenario, run
from virtlab.hardware import DiskParams
from virtlab.paths.container import ContainerParams
from virtlab.units import bytes_per_us_from_gbytes_per_s

REQ, RESP = 100, 200


def _one(scenario: Scenario):
    result = run(scenario, seed=0, max_requests=1, records=True)
    (record,) = result.records
    return record, result


def _wire_us(scenario: Scenario, nbytes: int) -> float:
    return wire_us(nbytes, scenario.nic)


def _copy_us(scenario: Scenario, nbytes: int) -> float:
    return nbytes / bytes_per_us_from_gbytes_per_s(scenario.host.memcpy_gbytes_per_s)


def _rr(approach: str, **container) -> Scenario:
    return Scenario(
        container=ContainerParams(**container),
        guests=(GuestSpec(name="g", approach=approach,
                          workloads=(RequestResponse(request_bytes=REQ, response_bytes=RESP,
                                                     server_work_us=7.0),)),))


def _rr_expected(s: Scenario, syscall_extra: float, pkt_extra: float, req_extra: float):
    h = s.host
    syscall = h.syscall_us + syscall_extra
    cpu = (h.irq_us + h.stack_pkt_us + pkt_extra + req_extra          # softirq receive
           + h.ctx_switch_us + syscall + _copy_us(s, REQ)               # wake + recv
           + 7.0                                                        # server work
           + syscall + _copy_us(s, RESP) + h.stack_pkt_us + pkt_extra + req_extra)  # send
    latency = s.nic.peer_stack_us + _wire_us(s, REQ) + cpu + _wire_us(s, RESP)
    return latency, cpu


def test_native_request_response_is_the_sum_of_its_steps():
    scenario = _rr("native")
    record, result = _one(scenario)
    latency, cpu = _rr_expected(scenario, 0.0, 0.0, 0.0)
    # The transmit completion interrupt is reaped after the response left: it costs CPU
    # (one more host interrupt) but no latency.
    assert record.latency_us == pytest.approx(latency, abs=1e-9)
    assert record.cpu_host_kernel_us + record.cpu_guest_us == pytest.approx(
        cpu + scenario.host.irq_us, abs=1e-9)
    assert record.cpu_guest_us == pytest.approx(7.0)
    assert (record.exits, record.notifications, record.interrupts) == (0, 0, 2)


@pytest.mark.parametrize(("network", "nat"), [("bridge", False), ("bridge", True),
                                              ("host", False)])
def test_container_adds_exactly_its_hop_nat_and_cgroup_costs(network, nat):
    scenario = _rr("container", network=network, nat=nat)
    record, _ = _one(scenario)
    c = scenario.container
    pkt_extra = (c.veth_hop_us if network == "bridge" else 0.0) + (c.nat_us if nat else 0.0)
    latency, _ = _rr_expected(scenario, c.syscall_extra_us, pkt_extra, c.cgroup_charge_us)
    assert record.latency_us == pytest.approx(latency, abs=1e-9)
    native, _ = _one(_rr("native"))
    assert record.latency_us - native.latency_us == pytest.approx(
        2 * (c.syscall_extra_us + pkt_extra + c.cgroup_charge_us), abs=1e-9)


def test_native_block_read_is_the_sum_of_its_steps():
    disk = DiskParams(service_cv=0.0)
    scenario = Scenario(disk=disk, guests=(GuestSpec(
        name="g", approach="native", workloads=(BlockIO(block_bytes=4096, iodepth=1),)),))
    record, _ = _one(scenario)
    h = scenario.host
    device = disk.read_access_us + 4096 / disk.interface_mbytes_per_s  # 1 MB/s = 1 B/µs
    expected = (h.syscall_us + 0.5 * h.blk_io_us + device + h.irq_us + 0.5 * h.blk_io_us
                + h.ctx_switch_us)
    assert record.latency_us == pytest.approx(expected, abs=1e-9)
    assert record.interrupts == 1


def test_zero_cost_steps_take_no_time_and_no_core():
    scenario = dataclasses.replace(
        _rr("native"), host=dataclasses.replace(
            Scenario().host, syscall_us=0.0, ctx_switch_us=0.0, irq_us=0.0, stack_pkt_us=0.0,
            memcpy_gbytes_per_s=1000.0))
    record, result = _one(scenario)
    expected = (scenario.nic.peer_stack_us + _wire_us(scenario, REQ) + 7.0
                + _copy_us(scenario, REQ) + _copy_us(scenario, RESP) + _wire_us(scenario, RESP))
    assert record.latency_us == pytest.approx(expected, abs=1e-9)
