"""What do the Linux scheduler models cost? Wall time of the noisy-neighbour example per variant.

The baseline is CFS with one global run queue; every other variant (EEVDF, per-CPU run
queues, a high-resolution tick) is timed on the same scenario and printed as a ratio to it,
side by side. Each figure is the best of ``--repeat`` runs.

    python benchmarks/sched_speed.py [--duration 200ms] [--cores 2] [--repeat 3]

This is a benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from virtlab import run
from virtlab.cli import parse_duration_us
from virtlab.config import load_scenario
from virtlab.hardware import HostParams

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "noisy-neighbour.toml"
VARIANTS = (
    ("cfs, global queue (baseline)", {"host": "cfs"}),
    ("eevdf, global queue", {"host": "eevdf"}),
    ("cfs, per-CPU queues", {"host": "cfs", "runqueues": "per-cpu"}),
    ("eevdf, per-CPU queues", {"host": "eevdf", "runqueues": "per-cpu"}),
    ("eevdf, hrtick", {"host": "eevdf", "hrtick": True}),
)


def _best_wall_s(scenario, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run(scenario, seed=0)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Time every variant and print it next to the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="200ms", help="simulated time per run")
    parser.add_argument("--cores", type=int, default=2, help="host cores")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (best counts)")
    args = parser.parse_args()
    base = load_scenario(EXAMPLE)
    duration = parse_duration_us(args.duration, "--duration")
    base = dataclasses.replace(base, duration_us=duration, warmup_us=duration / 10,
                               host=HostParams(cores=args.cores))
    print(f"{'variant':<32} {'wall s':>8} {'ratio':>7}")
    baseline = None
    for label, changes in VARIANTS:
        scenario = dataclasses.replace(base, scheduler=dataclasses.replace(base.scheduler,
                                                                           **changes))
        wall = _best_wall_s(scenario, args.repeat)
        baseline = baseline or wall
        print(f"{label:<32} {wall:>8.3f} {wall / baseline:>7.2f}")


if __name__ == "__main__":
    main()
