"""How fast does the simulator run? Prints simulated requests per wall-clock second.

For each approach, the default scenario's two workloads are simulated once; the figure is the
number of completed requests divided by wall time, next to SimPy events per second. For scale,
a bare SimPy loop that processes the same number of events (a process yielding timeouts) is
timed too: the ratio shows what the model's own logic costs on top of SimPy.

    python benchmarks/speed.py [--duration 20ms] [--repeat 3]

This is a benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import simpy

from virtlab import APPROACHES, default_scenario, run
from virtlab.cli import parse_duration_us


class _CountingEnvironment(simpy.Environment):
    """An environment that counts the events it processes."""

    def __init__(self) -> None:
        super().__init__()
        self.events_processed = 0

    def step(self) -> None:
        self.events_processed += 1
        super().step()


def bare_simpy_loop(events: int) -> float:
    """Wall seconds for SimPy to process ``events`` timeout events in one process."""
    env = simpy.Environment()

    def ticker(env: simpy.Environment):
        for _ in range(events):
            yield env.timeout(1.0)

    env.process(ticker(env))
    start = time.perf_counter()
    env.run()
    return time.perf_counter() - start


def count_events(scenario) -> int:
    """Events SimPy processes for one run of ``scenario`` (measured, not estimated)."""
    import virtlab.model as model_module

    original = model_module.simpy.Environment
    counter: list[_CountingEnvironment] = []

    class _Env(_CountingEnvironment):
        def __init__(self) -> None:
            super().__init__()
            counter.append(self)

    model_module.simpy.Environment = _Env  # type: ignore[misc]
    try:
        run(scenario, 0)
    finally:
        model_module.simpy.Environment = original  # type: ignore[misc]
    return counter[0].events_processed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", help="simulated window (default: the scenario's)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    scenario = default_scenario()
    if args.duration:
        scenario = dataclasses.replace(
            scenario, duration_us=parse_duration_us(args.duration, "--duration"))
    print(f"{'path':<12} {'requests':>9} {'events':>9} {'wall s':>7} {'req/wall-s':>11} "
          f"{'events/wall-s':>13} {'bare SimPy ev/s':>15}")
    for approach in APPROACHES:
        variant = scenario.with_approach(approach)
        best = float("inf")
        requests = 0
        for _ in range(args.repeat):
            result = run(variant, 0)
            best = min(best, result.wall_s)
            requests = len(result.records)
        events = count_events(variant)
        bare = min(bare_simpy_loop(events) for _ in range(args.repeat))
        print(f"{approach:<12} {requests:>9,} {events:>9,} {best:>7.2f} {requests / best:>11,.0f} "
              f"{events / best:>13,.0f} {events / bare:>15,.0f}")
    start = time.perf_counter()
    from virtlab import compare

    compare(default_scenario(), seed=0, replications=3)
    print(f"default comparison ({len(APPROACHES)} approaches x 3 replications): "
          f"{time.perf_counter() - start:.2f} s wall")


if __name__ == "__main__":
    main()
