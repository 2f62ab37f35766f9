"""Invariants that hold for every seed and parameter draw (hypothesis).

These are exact, not statistical: conservation of requests, causality, utilisation bounds,
the sample-path form of Little's law, ring bounds, and reproducibility of a seed.
"""

from __future__ import annotations

import dataclasses
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from virtlab import APPROACHES, BlockIO, BulkStream, GuestSpec, RequestResponse, Scenario, run
from virtlab.hardware import DiskParams, HostParams
from virtlab.paths.paravirtual import ParavirtualParams

workloads = st.one_of(
    st.builds(RequestResponse, in_flight=st.integers(1, 16),
              server_work_us=st.sampled_from([0.0, 3.0, 50.0]),
              loop=st.sampled_from(["closed", "open"]),
              rate_per_s=st.floats(1_000, 200_000)),
    st.builds(BlockIO, iodepth=st.integers(1, 64), read_fraction=st.sampled_from([0.0, 0.5, 1]),
              pattern=st.sampled_from(["random", "sequential"]),
              loop=st.sampled_from(["closed", "open"]), rate_per_s=st.floats(1_000, 300_000)),
    st.builds(BulkStream, direction=st.sampled_from(["transmit", "receive"]),
              window_bytes=st.sampled_from([65536, 262144])),
)


@st.composite
def scenarios(draw) -> Scenario:
    guests = tuple(
        GuestSpec(name=f"g{i}", approach=draw(st.sampled_from(APPROACHES)),
                  vcpus=draw(st.integers(1, 3)), workloads=(draw(workloads),))
        for i in range(draw(st.integers(1, 2))))
    return Scenario(
        duration_us=draw(st.sampled_from([1_500.0, 4_000.0])), warmup_us=500.0,
        host=HostParams(cores=draw(st.integers(1, 4))),
        disk=DiskParams(channels=draw(st.integers(1, 8)),
                        service_cv=draw(st.sampled_from([0.0, 0.5, 1.0]))),
        paravirtual=ParavirtualParams(ring_size=draw(st.sampled_from([2, 4, 16, 256]))),
        guests=guests)


@settings(max_examples=40)
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_run_invariants(scenario: Scenario, seed: int) -> None:
    result = run(scenario, seed, records=True)
    now = result.sim_now_us

    # Conservation: every arrival is either completed or still in flight.
    completed: dict[str, int] = {}
    for r in result.records:
        key = f"{r.guest}.{r.workload}"
        completed[key] = completed.get(key, 0) + 1
    for key, arrived in result.arrived.items():
        in_flight = sum(1 for g, w, _, _ in result.in_flight if f"{g}.{w}" == key)
        assert arrived == completed.get(key, 0) + in_flight

    # Causality.
    for r in result.records:
        assert r.arrival_us <= r.done_us <= now
        if not math.isnan(r.start_us):
            assert r.arrival_us <= r.start_us <= r.done_us

    # Utilisation of the cores and the devices.
    busy = sum(result.cpu_busy_us.values())
    assert 0.0 <= busy <= scenario.host.cores * now * (1 + 1e-9)
    assert 0.0 <= result.utilisation <= 1.0 + 1e-9
    assert result.device_busy_us["nic.tx"] >= 0.0

    # Little's law, sample-path form: the area under N(t) equals the summed time in system.
    for key, area in result.in_flight_area.items():
        total = sum(r.done_us - r.arrival_us for r in result.records
                    if f"{r.guest}.{r.workload}" == key)
        total += sum(now - a for g, w, _, a in result.in_flight if f"{g}.{w}" == key)
        assert math.isclose(area, total, rel_tol=1e-9, abs_tol=1e-6)

    # Ring bounds.
    for name, (capacity, max_occupancy) in result.ring_stats.items():
        assert 0 <= max_occupancy <= capacity, name


@settings(max_examples=10)
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_same_seed_gives_identical_records(scenario: Scenario, seed: int) -> None:
    assert run(scenario, seed, records=True).records == run(scenario, seed, records=True).records


@settings(max_examples=40)
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_invariants_hold_from_streaming_tallies_without_records(scenario: Scenario,
                                                                 seed: int) -> None:
    """Conservation, causality and Little's identity, from the tallies alone (records off)."""
    result = run(scenario, seed)
    assert result.records == []
    now = result.sim_now_us
    for key, arrived in result.arrived.items():
        in_flight = [a for g, w, _, a in result.in_flight if f"{g}.{w}" == key]
        # Conservation.
        assert arrived == result.completed[key] + len(in_flight)
        # Causality: nothing started before it arrived or finished before it started.
        wait_us, service_us = result.causality_slack_us[key]
        assert wait_us >= 0.0 and service_us >= 0.0
        # Little's law, sample-path form, with the sojourn sum kept while the run went.
        total = result.sojourn_us[key] + sum(now - a for a in in_flight)
        assert math.isclose(result.in_flight_area[key], total, rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=15)
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_streaming_summaries_equal_summaries_of_the_records(scenario: Scenario,
                                                            seed: int) -> None:
    """The tallies give what summarising the kept records after the run gives."""
    from virtlab.stats import summarize_records

    with_records = run(scenario, seed, records=True)
    without = run(scenario, seed)
    window = (scenario.warmup_us, scenario.duration_us)
    for streamed, plain in zip(without.summaries, with_records.summaries, strict=True):
        # Records on or off, the same summary (sums may be added in another order).
        for name, a in dataclasses.asdict(streamed).items():
            b = getattr(plain, name)
            assert a == b or (isinstance(a, float) and (
                (math.isnan(a) and math.isnan(b))
                or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9))), name
        rows = [r for r in with_records.records
                if (r.guest, r.workload) == (streamed.guest, streamed.workload)]
        batch = summarize_records(rows, guest=streamed.guest, workload=streamed.workload,
                                  approach=streamed.approach, kind=streamed.kind,
                                  window_us=window, cores=scenario.host.cores)
        for name in ("requests", "throughput_per_s", "throughput_bytes_per_s",
                     "latency_mean_us", "latency_p99_us", "exits_per_request",
                     "interrupts_per_request"):
            a, b = getattr(streamed, name), getattr(batch, name)
            assert a == b or (math.isnan(a) and math.isnan(b)), name
        for name in ("cpu_total_us", "cpu_share", "cpu_guest_us", "lat_queueing_us",
                     "exit_mmio_us"):
            a, b = getattr(streamed, name), getattr(batch, name)
            assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9,
                                                                    abs_tol=1e-9), name
