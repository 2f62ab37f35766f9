"""``virtlab validate``, ``virtlab bottleneck`` and ``--workload kv|web|oltp``.

Registered by :func:`add_commands` from the CLI's optional-command hook; the library side
lives in :mod:`virtlab.validation` and :mod:`virtlab.servers`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from virtlab.errors import ConfigError

__all__ = ["add_commands", "WORKLOAD_GUESTS"]

#: What ``--workload NAME`` puts in the scenario: one guest running that application.
WORKLOAD_GUESTS = {
    "kv": '[{name = "cache", vcpus = 2, workloads = [{kind = "kv"}]}]',
    "web": '[{name = "web", vcpus = 2, workloads = [{kind = "web"}]}]',
    "oltp": '[{name = "db", vcpus = 4, workloads = [{kind = "oltp"}]}]',
}


def _with_workload(func: Any) -> Any:
    """Wrap a command so that ``--workload`` becomes the first ``--set`` of the scenario."""

    def run(args: argparse.Namespace) -> int:
        name = getattr(args, "workload", None)
        if name is not None:
            if getattr(args, "config", None) is not None:
                raise ConfigError("--workload", "replaces the scenario's guests; give it "
                                                "without --config")
            args.set = [f"guests={WORKLOAD_GUESTS[name]}", *args.set]
        return int(func(args))

    return run


def _cmd_validate(args: argparse.Namespace) -> int:
    from virtlab.validation import COMPARISONS, table, to_json, to_markdown, validate

    keys = None
    if args.only:
        keys = tuple(k.strip() for k in args.only.split(",") if k.strip())
        unknown = sorted(set(keys) - {c.key for c in COMPARISONS})
        if unknown:
            raise ConfigError("--only", f"unknown comparison {unknown[0]!r}; known: "
                                        + ", ".join(c.key for c in COMPARISONS))
    if args.seed < 0:
        raise ConfigError("--seed", f"must be a non-negative integer, got {args.seed}")
    progress = None
    if not args.quiet and sys.stderr.isatty():
        def progress(done: int, total: int, key: str) -> None:
            end = "\n" if done + 1 == total else ""
            print(f"\rvalidate: {done + 1}/{total} {key:<30}", end=end, file=sys.stderr,
                  flush=True)
    outcomes = validate(fast=args.fast, seed=args.seed, keys=keys, progress=progress)
    if args.markdown:
        command = "virtlab validate --markdown" + (" --fast" if args.fast else "")
        print(to_markdown(outcomes, command), end="")
    elif args.json:
        print(to_json(outcomes))
    else:
        print(table(outcomes))
    return 0 if all(o.passed for o in outcomes) else 1


def _cmd_bottleneck(args: argparse.Namespace) -> int:
    from virtlab.cli import approach_list, build_scenario
    from virtlab.saturation import SATURATED, find_bottleneck

    if args.seed < 0:
        raise ConfigError("--seed", f"must be a non-negative integer, got {args.seed}")
    scenario = build_scenario(args.config, args.profile, args.set, args.duration, args.warmup)
    approaches = approach_list(args.approaches) or [g.approach for g in scenario.guests][:1]
    rows = []
    for approach in approaches:
        rows += find_bottleneck(scenario.with_approach(approach), seed=args.seed)
    if not rows:
        raise ConfigError("workloads", "no server workload (kind server, kv, web or oltp) in "
                                       "the scenario")
    span_s = (scenario.duration_us - scenario.warmup_us) / 1e6
    for v in rows:
        print(f"{v.approach:<12} {v.scope:<16} {v.throughput_per_s:>12,.0f} req/s   "
              f"bound by: {v.binding}")
        if v.throughput_per_s * span_s < 100:
            print(f"virtlab: warning: {v.approach} {v.scope}: fewer than 100 requests in the "
                  "window; lengthen --duration before trusting the busy fractions",
                  file=sys.stderr)
        busy = sorted(v.utilisation.items(), key=lambda kv: -kv[1])
        print("    busy: " + ", ".join(f"{k} {u:.0%}" for k, u in busy if u >= 0.005))
    print(f"A resource busy at least {SATURATED:.0%} of the window binds; 'clients': none "
          "does (more connections or a higher rate would raise throughput).")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``validate`` and ``bottleneck``; add ``--workload`` to the scenario commands."""
    p = subparsers.add_parser(
        "validate", help="the model against published end-to-end comparisons",
        description="Run each published comparison (ratio of an approach to native on the "
                    "published testbed) and judge it: pass when the simulated ratio is within "
                    "±25 %% of the published ratio and on the same side of 1.0. Exit status 1 "
                    "when any comparison misses.")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one JSON document")
    form.add_argument("--markdown", action="store_true",
                      help="print docs/validation.md (the generated page)")
    p.add_argument("--fast", action="store_true",
                   help="shorter runs (the form the test suite runs)")
    p.add_argument("--only", metavar="KEY,...", help="run only these comparisons")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (it is off anyway when stderr is not a TTY)")
    p.add_argument("-s", "--seed", type=int, default=0, help="root seed (default 0)")
    p.set_defaults(func=_cmd_validate)
    from virtlab.cli import _add_cpu_support_option

    p = subparsers.add_parser(
        "bottleneck", help="which resource limits each server: threads, vCPUs, kernel, disk",
        description="Run the scenario once per approach and report, for each server workload, "
                    "its throughput, how busy each resource was (application threads, the "
                    "path's kernel loops, vCPUs, host cores, disk, NIC) and the one that binds.")
    # One run per approach, no replications: only the options that mean something here.
    p.add_argument("--config", metavar="FILE.toml", help="scenario file (default: built-in)")
    p.add_argument("--profile", metavar="NAME|FILE", help="hardware/cost profile")
    p.add_argument("-s", "--seed", type=int, default=0, help="root seed (default 0)")
    p.add_argument("--duration", metavar="TIME", help="end of the window, e.g. 20ms")
    p.add_argument("--warmup", metavar="TIME", help="start of the window")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter (repeatable)")
    _add_cpu_support_option(p)
    p.add_argument("--approaches", help="comma-separated approaches (default: the scenario's)")
    p.set_defaults(func=_cmd_bottleneck)
    for command in ("compare", "bottleneck", "capacity", "sweep"):
        parser = subparsers.choices.get(command)
        if parser is None:
            continue
        parser.add_argument("--workload", choices=tuple(WORKLOAD_GUESTS),
                            help="run one guest with this application workload (kv: "
                                 "key-value cache, web: static web server, oltp: database) "
                                 "instead of the scenario's guests")
        parser.set_defaults(func=_with_workload(parser.get_default("func")))
