"""``virtlab sweep`` and ``virtlab capacity``: what-if studies over many scenarios.

The library side lives in :mod:`virtlab.sweep`; this module only parses flags and prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from virtlab.cli import (
    _add_run_options,
    _check_counts,
    _parse_value,
    approach_list,
    build_scenario,
    check_budget,
    check_field_path,
    parse_duration_us,
)
from virtlab.errors import ConfigError

__all__ = ["add_commands"]

#: ``capacity --max-guests`` at most this many (a host has at most 1024 cores).
MAX_GUESTS = 1024


def _parse_vary(items: Sequence[str]) -> dict[str, list[Any]]:
    factors: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError("--vary", f"expected KEY=V1,V2,... got {item!r}")
        key, values = item.split("=", 1)
        parsed = [_parse_value(v.strip(), "--vary") for v in values.split(",") if v.strip()]
        if not parsed:
            raise ConfigError("--vary", f"{key}: no values given")
        if key.strip() in factors:
            raise ConfigError("--vary", f"{key.strip()}: given twice; list all its values in one "
                                        f"--vary")
        factors[key.strip()] = parsed
    return factors


def _check_study(args: argparse.Namespace, scenario: Any, factors: dict[str, list[Any]]) -> None:
    """Before any point runs: every --vary key names a field, and the grid fits the budget."""
    import math

    for key in factors:
        check_field_path(scenario, key, "--vary")
    approaches = approach_list(args.approaches)
    points = math.prod(len(v) for v in factors.values()) * len(approaches or [None])
    check_budget([scenario], args.replications, args.jobs, args.force, points=points)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from virtlab.experiment import dumps_json
    from virtlab.sweep import sweep

    _check_counts(args)
    factors = _parse_vary(args.vary)
    scenario = build_scenario(args.config, args.profile, args.set, args.duration, args.warmup)
    _check_study(args, scenario, factors)
    points = sweep(scenario, factors, approach_list(args.approaches), seed=args.seed,
                   replications=args.replications, jobs=args.jobs)
    if args.json:
        print(dumps_json([{"values": p.values, "error": p.error,
                           "result": None if p.comparison is None
                           else p.comparison.to_json_dict()["entries"]} for p in points]))
        return 1 if any(p.error for p in points) else 0
    print(f"ARG seed {args.seed}")
    print(f"ARG replications {args.replications}")
    for key, values in factors.items():
        print(f"ARG vary {key} = {values}")
    header = (f"{'point':<32} {'approach':<12} {'guest.workload':<16} {'req/s':>12} "
              f"{'mean µs':>10} {'p99 µs':>10}")
    print(header)
    failed = 0
    for point in points:
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in point.values.items())
        if point.comparison is None:
            failed += 1
            print(f"{label:<32} FAILED: {point.error}")
            continue
        for entry in point.comparison.entries:
            if entry.error:
                failed += 1
                print(f"{label:<32} {entry.approach:<12} FAILED: {entry.error}")
                continue
            m = entry.means
            print(f"{label:<32} {entry.approach:<12} {entry.guest + '.' + entry.workload:<16} "
                  f"{m['throughput_per_s']:>12,.0f} {m['latency_mean_us']:>10.1f} "
                  f"{m['latency_p99_us']:>10.1f}")
    if failed:
        print(f"{failed} point(s) failed; the others are complete.")
    return 1 if failed else 0


def _cmd_capacity(args: argparse.Namespace) -> int:
    from virtlab.paths import APPROACHES
    from virtlab.sweep import capacity

    _check_counts(args)
    limit = parse_duration_us(args.p99_limit, "--p99-limit")
    if not 1 <= args.max_guests <= MAX_GUESTS:
        raise ConfigError("--max-guests", f"must be an integer in [1, {MAX_GUESTS}], "
                                          f"got {args.max_guests}")
    counts = list(range(1, args.max_guests + 1))
    scenario = build_scenario(args.config, args.profile, args.set, args.duration, args.warmup)
    approaches = approach_list(args.approaches) or list(APPROACHES)
    from virtlab.sweep import with_guest_copies

    # The largest count bounds every smaller one: sum over n of E(n) <= E(N) * (N + 1) / 2.
    check_budget([with_guest_copies(scenario, counts[-1])], args.replications, args.jobs,
                 args.force, points=len(approaches) * (len(counts) + 1) / 2)
    rows = capacity(scenario, limit, counts, approaches, seed=args.seed,
                    replications=args.replications, jobs=args.jobs)
    print(f"ARG seed {args.seed}")
    print(f"ARG p99-limit {limit:g} µs; guest template: {scenario.guests[0].name} "
          f"({', '.join(w.name for w in scenario.guests[0].workloads)}); host cores "
          f"{scenario.host.cores}")
    for approach in approaches:
        mine = [r for r in rows if r.approach == approach]
        fitting = [r.guests for r in mine if r.fits]
        best = max(fitting) if fitting else 0
        print(f"\n{approach}: {best} guest(s) fit (worst p99 <= {limit:g} µs)")
        for r in mine:
            status = "FAILED: " + r.error if r.error else ("ok" if r.fits else "over limit")
            print(f"  {r.guests:>3} guests  worst p99 {r.worst_p99_us:>10.1f} µs  "
                  f"total {r.total_throughput_per_s:>12,.0f} req/s  {status}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``sweep`` and ``capacity``."""
    p = subparsers.add_parser("sweep", help="run a grid of parameter values (what-if studies)",
                       description="Run every combination of the --vary values, each under "
                                   "the given approaches. A failed point is reported and the "
                                   "others are kept.",
                       epilog="Example: virtlab sweep --vary guests[0].workloads[0].in_flight="
                              "1,4,16 --approaches paravirtual,emulated")
    _add_run_options(p, config_required=False)
    p.add_argument("--vary", action="append", default=[], required=True,
                   metavar="KEY=V1,V2,...", help="a factor and its values (repeatable)")
    p.add_argument("--approaches", help="comma-separated approaches (default: the scenario's)")
    p.set_defaults(func=_cmd_sweep)

    p = subparsers.add_parser("capacity", help="how many copies of a guest fit before p99 breaks?",
                       description="Clone the scenario's first guest 1..N times on the host "
                                   "and report, per approach, the worst guest's p99 latency "
                                   "and how many guests fit under the limit.")
    _add_run_options(p, config_required=False)
    p.set_defaults(replications=1)
    p.add_argument("--p99-limit", required=True, metavar="TIME",
                   help="latency limit for the worst guest's p99, e.g. 200us or 1ms")
    p.add_argument("--max-guests", type=int, default=8, help="largest guest count (default 8)")
    p.add_argument("--approaches", help="comma-separated approaches (default: all)")
    p.set_defaults(func=_cmd_capacity)

