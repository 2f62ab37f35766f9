"""Behaviour of the default scenario: what the lab claims about the four approaches.

These compare replication means of the default comparison (common random numbers). They are
checks of the model's *ordering*, not of absolute numbers.
"""

from __future__ import annotations

import pytest

from virtlab import compare, default_scenario

APPROACH_ORDER = ("native", "container", "paravirtual", "emulated")


@pytest.fixture(scope="module")
def comparison():
    return compare(default_scenario(), seed=0, replications=3)


@pytest.mark.parametrize("guest", ["net", "disk"])
def test_throughput_order_native_container_paravirtual_emulated(comparison, guest):
    tput = [comparison.entry(a, guest).means["throughput_per_s"] for a in APPROACH_ORDER]
    native, container, paravirtual, emulated = tput
    assert native >= container > paravirtual > emulated, dict(zip(APPROACH_ORDER, tput, strict=True))


@pytest.mark.parametrize("guest", ["net", "disk"])
def test_latency_order_is_the_reverse(comparison, guest):
    lat = [comparison.entry(a, guest).means["latency_mean_us"] for a in APPROACH_ORDER]
    native, container, paravirtual, emulated = lat
    assert native <= container < paravirtual < emulated, dict(zip(APPROACH_ORDER, lat, strict=True))


@pytest.mark.parametrize("guest", ["net", "disk"])
def test_emulated_takes_several_exits_per_request(comparison, guest):
    assert comparison.entry("emulated", guest).means["exits_per_request"] >= 2.0


@pytest.mark.parametrize("guest", ["net", "disk"])
def test_shared_kernel_paths_take_no_exits(comparison, guest):
    for approach in ("native", "container"):
        means = comparison.entry(approach, guest).means
        assert means["exits_per_request"] == 0.0
        assert means["notifications_per_request"] == 0.0


def test_paravirtual_batches_notifications_under_load(comparison):
    # The default network workload keeps 4 transactions in flight; the disk one 32 I/Os.
    for guest in ("net", "disk"):
        assert comparison.entry("paravirtual", guest).means["notifications_per_request"] < 0.5


def test_cpu_time_per_request_is_split_by_where_it_was_spent(comparison):
    native = comparison.entry("native", "net").means
    emulated = comparison.entry("emulated", "net").means
    assert native["cpu_exit_us"] == 0.0 and native["cpu_guest_us"] == 0.0
    assert emulated["cpu_exit_us"] > 0.0 and emulated["cpu_backend_us"] > 0.0
    for approach in APPROACH_ORDER:
        m = comparison.entry(approach, "net").means
        parts = m["cpu_guest_us"] + m["cpu_exit_us"] + m["cpu_backend_us"] + m[
            "cpu_host_kernel_us"]
        assert parts == pytest.approx(m["cpu_total_us"])
