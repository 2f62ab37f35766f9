"""How fast does the simulator run the application servers? Simulated requests per wall-second.

For each approach, one guest runs each application workload (kv, web, oltp: their defaults,
as ``virtlab compare --workload NAME`` builds them) and, as the baseline, netperf TCP_RR with
the same number of connections (16 in flight); the figure is completed requests divided by wall
time (best of ``--repeat``), with the ratio to the baseline side by side. An OLTP "request" is
a whole transaction (11 round trips), so its ratio is also shown per round trip.

    python benchmarks/servers.py [--duration 20ms] [--repeat 3]

This is a benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse

from virtlab import APPROACHES, GuestSpec, RequestResponse, Scenario, run
from virtlab.cli import parse_duration_us
from virtlab.servers import KeyValueCache, OltpDatabase, WebServer

WORKLOADS = {
    "rr (baseline)": RequestResponse(in_flight=16),
    "kv": KeyValueCache(),
    "web": WebServer(),
    "oltp": OltpDatabase(),
}
#: Round trips with the client per simulated request.
ROUND_TRIPS = {"oltp": OltpDatabase().queries + 1}


def requests_per_wall_s(scenario: Scenario, repeat: int) -> tuple[int, float]:
    """Completed requests of one run and the best wall time over ``repeat`` runs."""
    best, completed = float("inf"), 0
    for _ in range(repeat):
        result = run(scenario, 0)
        best = min(best, result.wall_s)
        completed = sum(result.completed.values())
    return completed, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="20ms", help="simulated time (default 20ms)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    args = parser.parse_args()
    duration_us = parse_duration_us(args.duration, "--duration")
    print(f"{'approach':<12} {'workload':<14} {'requests':>9} {'wall s':>7} {'req/wall-s':>11} "
          f"{'vs baseline':>11} {'per round trip':>14}")
    for approach in APPROACHES:
        baseline = None
        for name, workload in WORKLOADS.items():
            scenario = Scenario(duration_us=duration_us, warmup_us=duration_us / 10,
                                guests=(GuestSpec(name="g", approach=approach, vcpus=4,
                                                  workloads=(workload,)),))
            completed, wall_s = requests_per_wall_s(scenario, args.repeat)
            rate = completed / wall_s
            baseline = rate if baseline is None else baseline
            trips = ROUND_TRIPS.get(name, 1)
            print(f"{approach:<12} {name:<14} {completed:>9,} {wall_s:>7.3f} {rate:>11,.0f} "
                  f"{rate / baseline:>10.2f}x {rate * trips / baseline:>13.2f}x")


if __name__ == "__main__":
    main()
