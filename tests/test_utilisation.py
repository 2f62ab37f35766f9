"""Utilisation of the shared resources over the window, and the bottleneck named from it."""

from __future__ import annotations

import pytest

from tests.helpers import open_loop_disk_scenario, single_queue_disk, zero_cost_host
from virtlab import BlockIO, GuestSpec, RequestResponse, Scenario, run
from virtlab.stats import bottleneck, mean_ci


def _closed_disk(iodepth: int) -> Scenario:
    return Scenario(duration_us=50_000.0, warmup_us=5_000.0, host=zero_cost_host(),
                    disk=single_queue_disk(10.0, 1.0),
                    guests=(GuestSpec(name="g", approach="native",
                                      workloads=(BlockIO(iodepth=iodepth, block_bytes=512),)),))


def test_a_saturated_disk_is_named_the_bottleneck():
    """32 I/Os always outstanding on one channel keep it busy all the time."""
    (summary,) = run(_closed_disk(32), 0).summaries
    assert summary.disk_utilisation == pytest.approx(1.0, abs=0.01)
    assert summary.core_utilisation == 0.0   # every CPU cost is zero here
    assert bottleneck(summary) == ("disk", summary.disk_utilisation)


def test_nothing_shared_binds_one_transaction_in_flight():
    """netperf TCP_RR with one transaction: latency-bound, no shared resource near busy."""
    scenario = Scenario(guests=(GuestSpec(name="g", approach="native",
                                          workloads=(RequestResponse(in_flight=1),)),))
    (summary,) = run(scenario, 0).summaries
    assert 0.0 < summary.core_utilisation < 0.5
    assert 0.0 < summary.nic_tx_utilisation < 0.1
    assert bottleneck(summary) is None


def test_disk_utilisation_estimates_rho_and_rejects_a_wrong_one():
    """M/M/1 at rho = 0.7: the windowed utilisation's 99.9 % CI holds 0.7, not 0.77 or 0.63."""
    scenario = open_loop_disk_scenario(70_000.0, 10.0, 1.0, duration_us=100_000.0,
                                       warmup_us=10_000.0)
    values = [run(scenario, 5, replication=r).summaries[0].disk_utilisation for r in range(6)]
    mean, half = mean_ci(values, 0.999)
    rho = 0.7 * (10.0 + 512 / 1e6) / 10.0   # the interface adds 0.000512 µs per I/O
    assert abs(mean - rho) <= half
    assert abs(mean - 1.1 * rho) > half and abs(mean - 0.9 * rho) > half


def test_bottleneck_reads_means_of_an_experiment_too():
    means = {"core_utilisation": 0.95, "disk_utilisation": 0.97, "nic_tx_utilisation": 0.1,
             "nic_rx_utilisation": float("nan")}
    assert bottleneck(means) == ("disk", 0.97)
    assert bottleneck({**means, "disk_utilisation": 0.5}) == ("host cores", 0.95)
    # A threshold above full use names nothing, even for a disk that never idles.
    assert bottleneck(run(_closed_disk(1), 0).summaries[0], threshold=1.01) is None
