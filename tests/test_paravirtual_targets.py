"""Published targets (F14, B03), reproduced by profiles that describe testbeds.

The profiles are not tuned per workload: the same ``testbed-2014`` profile serves the
request/response and the bulk test, the same ``testbed-2003`` profile the ttcp test. These are
single-seed checks against the published figures, with tolerances stated in their own terms
(microseconds of latency, percent of throughput); no parameter is chosen to meet them.
"""

from __future__ import annotations

import pytest

from virtlab import BulkStream, GuestSpec, RequestResponse, compare
from virtlab.config import scenario_from_dict

#: Felter et al. 2014, netperf TCP_RR (1 transaction, 100 B / 200 B): native and KVM + vhost.
F14_NATIVE_RR_US = 37.58
F14_KVM_RR_US = 67.94
#: Bulk TCP: all approaches reach ~9.3 Gb/s of the 9.41 Gb/s goodput limit.
F14_BULK_GBPS = 9.3


def scenario(profile: str, workload, duration_us: float = 40_000.0):
    guest = GuestSpec(name="net", approach="native", vcpus=1, workloads=(workload,))
    return scenario_from_dict({"name": "target", "duration_us": duration_us,
                               "warmup_us": 4_000.0, "guests": [guest.to_dict()]}, profile)


@pytest.fixture(scope="module")
def rr_2014():
    return compare(scenario("testbed-2014", RequestResponse()), ("native", "paravirtual"),
                   replications=1)


def test_2014_native_request_response_latency(rr_2014):
    """Native TCP_RR is the sum of the profile's per-layer costs, below the measured 37.6 µs.

    The per-packet costs come from below (S210), not from F14's native figure: the model
    lacks what the testbed spent beyond them (docs/validation.md, F14-tcp-rr-kvm).
    """
    s = rr_2014.results[0].scenario
    h, nic = s.host, s.nic
    req, resp = RequestResponse().request_bytes, RequestResponse().response_bytes

    def wire_us(nbytes: int) -> float:
        frames = max(1, -(-nbytes // nic.payload_per_frame_bytes))
        bits = (nbytes + frames * nic.frame_overhead_bytes) * 8
        return bits / (nic.line_rate_gbps * 1e3) + nic.wire_latency_us

    def copy_us(nbytes: int) -> float:
        return nbytes / (h.memcpy_gbytes_per_s * 1e3)

    expected = (nic.peer_stack_us + wire_us(req)
                + h.irq_us + h.stack_pkt_us                          # softirq receive
                + h.ctx_switch_us + h.syscall_us + copy_us(req)      # wake + recv
                + h.syscall_us + copy_us(resp) + h.stack_pkt_us      # send
                + wire_us(resp))
    native = rr_2014.entry("native", "net").means["latency_mean_us"]
    assert native == pytest.approx(expected, abs=0.05)
    assert native < F14_NATIVE_RR_US


def test_2014_virtio_vhost_adds_about_30_us(rr_2014):
    """KVM + virtio + vhost adds about 30 µs per transaction (67.9 vs 37.6 µs measured)."""
    native = rr_2014.entry("native", "net").means["latency_mean_us"]
    paravirtual = rr_2014.entry("paravirtual", "net").means["latency_mean_us"]
    assert paravirtual - native == pytest.approx(F14_KVM_RR_US - F14_NATIVE_RR_US, abs=3.0)


def test_2014_bulk_tcp_is_link_bound_for_both():
    """Bulk TCP transmit: both at the link's goodput, the difference is CPU, not throughput."""
    result = compare(scenario("testbed-2014", BulkStream()), ("native", "paravirtual"),
                     replications=1)
    gbps = {a: result.entry(a, "net").means["throughput_bytes_per_s"] * 8 / 1e9
            for a in ("native", "paravirtual")}
    assert gbps["paravirtual"] == pytest.approx(gbps["native"], rel=0.01)
    assert gbps["native"] == pytest.approx(F14_BULK_GBPS, rel=0.02)
    cpu = {a: result.entry(a, "net").means["cpu_total_us"] for a in ("native", "paravirtual")}
    assert cpu["paravirtual"] > cpu["native"]


def test_2003_xen_ttcp_transmit_matches_native_as_a_one_way_stream():
    """Barham et al. 2003: XenoLinux ttcp transmit equals native (897 = 897 Mb/s).

    Met by the one-way stream (``acks = false``). With the peer's ACKs (the default) native
    stays link-bound near 897 Mb/s but the Xen 1.x column turns CPU-bound on the 2003
    per-packet costs: docs/validation.md, B03-ttcp-xen, gives the mechanism.
    """
    result = compare(scenario("testbed-2003", BulkStream(acks=False), duration_us=100_000.0),
                     ("native", "paravirtual"), replications=1)
    native = result.entry("native", "net").means["throughput_bytes_per_s"]
    xen = result.entry("paravirtual", "net").means["throughput_bytes_per_s"]
    assert result.results[1].scenario.paravirtual.backend == "xen"
    assert xen == pytest.approx(native, rel=0.01)
    # Gigabit, MTU-sized segments: link-bound near the published 897 Mb/s.
    assert native * 8 / 1e6 == pytest.approx(897.0, rel=0.06)
    with_acks = compare(scenario("testbed-2003", BulkStream(), duration_us=100_000.0),
                        ("native",), replications=1)
    native_acked = with_acks.entry("native", "net").means["throughput_bytes_per_s"]
    assert native_acked * 8 / 1e6 == pytest.approx(897.0, rel=0.06)
