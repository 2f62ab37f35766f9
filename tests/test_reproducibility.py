"""Same seed, same result (also in parallel); common random numbers across approaches."""

from __future__ import annotations

import dataclasses

from virtlab import BlockIO, GuestSpec, RequestResponse, Scenario, compare, run
from virtlab.rng import Streams

SHORT = dict(duration_us=5_000.0, warmup_us=500.0)


def _open_loop() -> Scenario:
    return Scenario(**SHORT, guests=(
        GuestSpec(name="a", workloads=(RequestResponse(loop="open", rate_per_s=50_000),)),
        GuestSpec(name="b", workloads=(BlockIO(loop="open", rate_per_s=80_000),))))


def test_same_seed_identical_records_and_different_seed_differs():
    scenario = _open_loop()
    first, second = run(scenario, 3, records=True), run(scenario, 3, records=True)
    assert first.records == second.records
    assert run(scenario, 4, records=True).records != first.records


def test_parallel_equals_sequential():
    scenario = dataclasses.replace(_open_loop(), duration_us=3_000.0)
    sequential = compare(scenario, ("native", "emulated"), seed=5, replications=2, jobs=1)
    parallel = compare(scenario, ("native", "emulated"), seed=5, replications=2, jobs=2)
    assert sequential.to_json_dict() == parallel.to_json_dict()


def test_every_approach_sees_the_same_arrivals():
    scenario = _open_loop()
    arrivals = {}
    for approach in ("native", "container", "paravirtual", "emulated"):
        result = run(scenario.with_approach(approach), 9, records=True)
        times = sorted(r.arrival_us for r in result.records if r.guest == "a")
        times += sorted(a for g, _w, _i, a in result.in_flight if g == "a")
        arrivals[approach] = sorted(times)
    assert len({tuple(t) for t in arrivals.values()}) == 1


def test_streams_are_independent_of_creation_order():
    one, two = Streams(1), Streams(1)
    a1 = [one.get("x").exponential(1.0) for _ in range(5)]
    _ = two.get("y").exponential(1.0)  # another source drawn first
    a2 = [two.get("x").exponential(1.0) for _ in range(5)]
    assert a1 == a2
    assert Streams(1, replication=1).get("x").exponential(1.0) != a1[0]


def test_sampler_moments_match_their_declared_values():
    stream = Streams(2).get("moments")
    n = 200_000
    import numpy as np

    exp = np.array([stream.exponential(3.0) for _ in range(n)])
    gam = np.array([stream.gamma(3.0, 0.5) for _ in range(n)])
    # 5-sigma bands from the known standard errors (mean 3; sd 3 and 1.5 respectively).
    assert abs(exp.mean() - 3.0) < 5 * 3.0 / n**0.5
    assert abs(gam.mean() - 3.0) < 5 * 1.5 / n**0.5
    assert abs(gam.std() / gam.mean() - 0.5) < 0.01
