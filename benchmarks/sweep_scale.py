"""How long does a 1,000-point sweep take, and how long its rerun from the results store?

Runs the same grid three ways, side by side:

1. a serial baseline on a sample of the grid (``--baseline-points`` points, one process),
   scaled to the whole grid;
2. the whole grid on the local process pool (``--jobs`` workers), into an empty store, with
   the progress bar drawn on stderr;
3. the same sweep again, served from the store.

It prints wall times, runs per second and the ratios (pool vs serial baseline; rerun vs first
run). The bar from issue 12: (2) under 5 minutes on 2 cores, (3) within seconds.

    python benchmarks/sweep_scale.py [--points 1000] [--jobs 2] [--duration 2ms]

The grid is the default scenario (a request/response guest and a disk guest) at ``--duration``,
one approach (native), one replication per point, varying in-flight requests, the host's
per-segment stack cost and the wire latency. This is a benchmark, not a test: it asserts
nothing. The store goes to a temporary directory unless ``--store DIR`` is given.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

from virtlab.cli import build_scenario
from virtlab.progress import Progress
from virtlab.store import ResultStore
from virtlab.sweep import grid_size, sweep


def grid(points: int) -> dict[str, list]:
    """A three-factor grid of about ``points`` points (10 x 10 x points/100)."""
    third = max(1, math.ceil(points / 100))
    return {"guests[0].workloads[0].in_flight": list(range(1, 11)),
            "host.stack_pkt_us": [round(2.0 + 0.5 * i, 1) for i in range(10)],
            "nic.wire_latency_us": [round(1.0 + i, 1) for i in range(third)]}


def timed_sweep(scenario, factors, jobs: int, store, label: str) -> tuple[float, object]:
    total = grid_size(factors)
    progress = Progress(total, label, enabled=True)
    start = time.perf_counter()
    result = sweep(scenario, factors, ["native"], replications=1, jobs=jobs, store=store,
                   progress=progress)
    progress.close()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--duration", default="2ms")
    parser.add_argument("--baseline-points", type=int, default=40)
    parser.add_argument("--store", help="store directory (default: a temporary one, removed)")
    args = parser.parse_args()

    scenario = build_scenario(None, None, [], args.duration, "0.5ms")
    factors = grid(args.points)
    points = grid_size(factors)
    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="virtlab-bench-"))
    try:
        sample = {**factors, "nic.wire_latency_us": factors["nic.wire_latency_us"][:1]}
        sample["host.stack_pkt_us"] = sample["host.stack_pkt_us"][
            :max(1, math.ceil(args.baseline_points / 10))]
        serial_s, serial = timed_sweep(scenario, sample, 1, None, "serial baseline")
        per_run = serial_s / len(serial)
        first_s, first = timed_sweep(scenario, factors, args.jobs, ResultStore(root),
                                     f"{points} points, {args.jobs} workers")
        store = ResultStore(root)
        again_s, again = timed_sweep(scenario, factors, args.jobs, store, "rerun from store")
        assert first.to_frame().equals(again.to_frame()), "a rerun must give the same frame"
        failed = first.failed
    finally:
        if not args.store:
            shutil.rmtree(root, ignore_errors=True)

    estimate = per_run * points
    print(f"sweep of {points} points (default scenario, {args.duration}, native, 1 replication)")
    print(f"  serial baseline   {len(serial):>5} points  {serial_s:8.2f} s  "
          f"{per_run * 1e3:7.1f} ms/point  -> {estimate:7.1f} s for the whole grid (estimate)")
    print(f"  pool, {args.jobs} workers   {points:>5} points  {first_s:8.2f} s  "
          f"{first_s / points * 1e3:7.1f} ms/point  ({points / first_s:6.1f} points/s; "
          f"{estimate / first_s:4.2f}x the serial estimate)")
    print(f"  rerun from store  {points:>5} points  {again_s:8.2f} s  "
          f"{again_s / points * 1e3:7.1f} ms/point  ({again_s / first_s:.3f}x the first run; "
          f"{store.hits} runs reused)")
    print(f"  failed points: {failed}; bar: first run under 300 s "
          f"({'met' if first_s < 300 else 'NOT met'}); rerun {first_s / again_s:.0f}x faster "
          "than the first run")


if __name__ == "__main__":
    main()
