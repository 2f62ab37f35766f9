"""The ``virtlab`` command line.

``main(argv) -> int`` does the work; nothing runs at import. Every user error (a bad flag, a
bad value in a scenario file) ends as one line ``virtlab: error: <field>: <message>`` and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Sequence
from typing import Any, NoReturn

from virtlab.errors import ConfigError, PreflightError

__all__ = ["main", "build_scenario", "parse_duration_us"]

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s)?\s*$")
_UNIT_US = {None: 1.0, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"virtlab: error: {message} (see '{self.prog} --help')\n")


def parse_duration_us(text: str, field: str) -> float:
    """Parse ``"30ms"``, ``"0.5s"``, ``"2000us"`` or a bare number of µs."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(field, f"must be a positive duration such as 30ms, 0.5s or 2000us, "
                                 f"got {text!r}")
    value = float(match.group(1)) * _UNIT_US[match.group(2)]
    if value <= 0:
        raise ConfigError(field, f"must be positive, got {text!r}")
    return value


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_set(data: dict[str, Any], assignment: str) -> None:
    from virtlab.sweep import apply_assignment

    if "=" not in assignment:
        raise ConfigError("--set", f"expected KEY=VALUE (e.g. paravirtual.ring_size=512), "
                                   f"got {assignment!r}")
    key, value = assignment.split("=", 1)
    apply_assignment(data, key, _parse_value(value))


def build_scenario(config: str | None, profile: str | None, sets: Sequence[str] = (),
                   duration: str | None = None, warmup: str | None = None) -> Any:
    """The scenario the flags describe: file (or default), profile, ``--set`` and durations."""
    from virtlab.config import _read_toml, default_scenario, scenario_from_dict

    data: dict[str, Any] = {}
    if config is not None:
        from pathlib import Path

        data = _read_toml(Path(config), "--config")
    if "guests" not in data:
        data["guests"] = default_scenario().to_dict()["guests"]
    for assignment in sets:
        _apply_set(data, assignment)
    if duration is not None:
        data["duration_us"] = parse_duration_us(duration, "--duration")
    if warmup is not None:
        data["warmup_us"] = parse_duration_us(warmup, "--warmup")
    return scenario_from_dict(data, profile)


def _add_run_options(parser: argparse.ArgumentParser, config_required: bool) -> None:
    parser.add_argument("--config", required=config_required, metavar="FILE.toml",
                        help="scenario file (see examples/); default: the built-in scenario")
    parser.add_argument("--profile", metavar="NAME|FILE",
                        help="hardware/cost profile: a built-in name (virtlab profiles) or a "
                             "TOML file such as one written by 'virtlab calibrate'")
    parser.add_argument("-s", "--seed", type=int, default=0,
                        help="root seed; the same seed gives the same numbers (default 0)")
    parser.add_argument("--duration", metavar="TIME",
                        help="end of the measurement window, e.g. 30ms, 0.5s (bare number: µs)")
    parser.add_argument("--warmup", metavar="TIME", help="discard requests completed before this")
    parser.add_argument("-r", "--replications", type=int, default=3,
                        help="independent replications for confidence intervals (default 3)")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="parallel processes (results do not depend on it; default: one "
                             "per CPU, at most one per run)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one parameter, e.g. --set paravirtual.ring_size=512 or "
                             "--set guests[0].vcpus=4 (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of tables (docs/results.md)")
    _add_cpu_support_option(parser)
    _add_engine_options(parser)
    parser.add_argument("--breakdown", action="store_true",
                        help="also print where each request's time went (latency phases) and "
                             "its VM exits by reason (emulated path)")


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Where runs execute, progress, and the results as data files (virtlab.cli_studies)."""
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="run on this Dask cluster instead of local processes")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar (it is drawn only when stderr is a terminal)")
    parser.add_argument("--csv", metavar="FILE", help="also write the results as CSV "
                                                      "(columns: docs/results.md)")
    parser.add_argument("--parquet", metavar="FILE", help="also write the results as Parquet")


class _CpuSupportAction(argparse.Action):
    """``--cpu-support NAME`` is ``--set hypervisor.cpu_support=NAME``, in command-line order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        sets = list(getattr(namespace, "set", None) or [])
        sets.append(f'hypervisor.cpu_support="{values}"')
        namespace.set = sets
        setattr(namespace, self.dest, values)


def _add_cpu_support_option(parser: argparse.ArgumentParser) -> None:
    from virtlab.cpusupport import PRESET_NAMES

    parser.add_argument("--cpu-support", action=_CpuSupportAction, choices=PRESET_NAMES,
                        metavar="PRESET",
                        help="CPU virtualization support preset, one of "
                             f"{', '.join(PRESET_NAMES)} (virtlab presets); explicit "
                             "[hypervisor] costs still win")


def _check_counts(args: argparse.Namespace) -> None:
    if args.replications < 1:
        raise ConfigError("--replications", f"must be an integer >= 1, got {args.replications}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError("--jobs", f"must be an integer >= 1, got {args.jobs}")
    if args.seed < 0:
        raise ConfigError("--seed", f"must be a non-negative integer, got {args.seed}")


def _report(comparison: Any, scenario: Any, args: argparse.Namespace) -> None:
    from virtlab.report import comparison_table, effective_parameters

    if args.json:
        print(comparison.to_json())
        return
    print(f"ARG seed {args.seed}")
    print(f"ARG replications {args.replications}")
    print(f"ARG profile {scenario.profile}")
    print("# effective parameters (time in µs)")
    for line in effective_parameters(scenario):
        print(f"  {line}")
    print()
    print(comparison_table(comparison))
    print("Throughput and mean latency show the replication mean ± the 95 % CI half-width.")
    from virtlab.report import scheduling_table

    scheduling = scheduling_table(comparison)
    if scheduling is not None:
        print()
        print(scheduling)
    if getattr(args, "breakdown", False):
        from virtlab.report import breakdown_table

        print()
        print(breakdown_table(comparison))
        from virtlab.report import ring_table

        rings = ring_table(comparison)
        if rings:
            print(rings)


def _cmd_compare(args: argparse.Namespace) -> int:
    from virtlab.cli_studies import run_compare

    _check_counts(args)
    approaches = approach_list(args.approaches) or []
    scenario = build_scenario(args.config, args.profile, args.set, args.duration, args.warmup)
    comparison = run_compare(scenario, approaches, args)
    _report(comparison, scenario, args)
    return 1 if any(e.error for e in comparison.entries) else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from virtlab.cli_studies import run_compare

    _check_counts(args)
    scenario = build_scenario(args.config, args.profile, args.set, args.duration, args.warmup)
    comparison = run_compare(scenario, None, args)
    _report(comparison, scenario, args)
    return 1 if any(e.error for e in comparison.entries) else 0


def _cmd_trace(args: argparse.Namespace) -> int:
    import dataclasses

    from virtlab.model import run
    from virtlab.trace import ListTracer

    scenario = build_scenario(args.config, args.profile, args.set)
    if args.approach:
        scenario = scenario.with_approach(args.approach)
    guests = [g for g in scenario.guests if args.guest in (None, g.name)
              and any(args.workload in (None, w.name, w.kind) for w in g.workloads)]
    if not guests and args.guest is None:
        raise ConfigError("--workload", f"no guest has a workload named or of kind "
                                        f"{args.workload!r}")
    if not guests:
        raise ConfigError("--guest", f"must be one of "
                                     f"{', '.join(g.name for g in scenario.guests)}, "
                                     f"got {args.guest!r}")
    guest = guests[0]
    workloads = [w for w in guest.workloads if args.workload in (None, w.name, w.kind)]
    if not workloads:
        raise ConfigError("--workload", f"must be one of "
                                        f"{', '.join(w.name for w in guest.workloads)}, "
                                        f"got {args.workload!r}")
    workload = workloads[0]
    if args.requests < 1:
        raise ConfigError("--requests", f"must be an integer >= 1, got {args.requests}")
    # One guest, one workload, one request at a time: the story of each request is unmixed.
    quiet = dataclasses.replace(workload, loop="closed", **_one_in_flight(workload))
    single = dataclasses.replace(scenario, guests=(dataclasses.replace(
        guest, workloads=(quiet,)),), warmup_us=0.0, duration_us=10_000_000.0)
    tracer = ListTracer()
    result = run(single, args.seed, tracer=tracer, max_requests=args.requests)
    print(f"ARG seed {args.seed}")
    print(f"ARG approach {guest.approach}  guest {guest.name}  workload {workload.name} "
          f"({workload.kind})  profile {scenario.profile}")
    print(f"{'time':>15}  {'req':>6}  {'where':<24} {'what':<14} detail")
    for record in sorted(tracer.records, key=lambda r: (r.t_us, r.request_id)):
        print(record.format())
    for rec in result.records:
        print(f"request #{rec.id}: latency {rec.latency_us:.3f} µs, exits {rec.exits}, "
              f"notifications {rec.notifications}, interrupts {rec.interrupts}, CPU "
              f"guest {rec.cpu_guest_us:.3f} / exit {rec.cpu_exit_us:.3f} / backend "
              f"{rec.cpu_backend_us:.3f} / host {rec.cpu_host_kernel_us:.3f} µs")
        from virtlab.report import request_breakdown

        for line in request_breakdown(rec):
            print(line)
    from virtlab.report import ring_summary

    for line in ring_summary(result.path_stats):
        print(line)
    return 0


def approach_list(text: str | None) -> list[str] | None:
    from virtlab.paths import APPROACHES

    if text is None:
        return None
    approaches = [a.strip() for a in text.split(",") if a.strip()]
    for approach in approaches:
        if approach not in APPROACHES:
            raise ConfigError("--approaches", f"must be a comma-separated list of "
                                              f"{', '.join(APPROACHES)}, got {approach!r}")
    return approaches


def _one_in_flight(workload: Any) -> dict[str, Any]:
    from virtlab.workload import BlockIO, BulkStream, CpuHog, RequestResponse

    if isinstance(workload, RequestResponse):
        return {"in_flight": 1}
    if isinstance(workload, CpuHog):
        return {"threads": 1}
    if isinstance(workload, BlockIO):
        return {"iodepth": 1, "jobs": 1}
    assert isinstance(workload, BulkStream)
    return {"window_bytes": min(workload.window_bytes, 65536)}


def _param_tables() -> list[tuple[str, Any]]:
    """Every parameter table with the name it has in a scenario file."""
    from virtlab.config import PARAM_SECTIONS, GuestSpec, Scenario
    from virtlab.sched.params import GuestSchedParams
    from virtlab.workload import BlockIO, BulkStream, CpuHog, RequestResponse

    tables: list[tuple[str, Any]] = [("top level of a scenario file", Scenario)]
    tables += [(f"[{cls.section}]", cls) for cls in PARAM_SECTIONS]
    tables += [("[[guests]]", GuestSpec), ("[guests.sched]", GuestSchedParams)]
    tables += [(f'[[guests.workloads]] kind = "{cls().kind}"', cls)
               for cls in (RequestResponse, BulkStream, BlockIO, CpuHog)]
    return tables


def _cmd_params(args: argparse.Namespace) -> int:
    from virtlab.params import describe

    for title, cls in _param_tables():
        rows = [row for row in describe(cls) if row[0] != "kind"]
        if not rows:
            continue
        if args.markdown:
            print(f"\n### `{title}`\n\n{(cls.__doc__ or '').strip().splitlines()[0]}\n")
            print("| name | default | unit | allowed | meaning | source |")
            print("|---|---|---|---|---|---|")
            for name, default, info in rows:
                shown = "preset" if default is None else default
                print(f"| `{name}` | `{shown}` | {info.unit} | {info.allowed()} | {info.doc} "
                      f"| {info.source} |")
        else:
            print(title)
            for name, default, info in rows:
                unit = f" {info.unit}" if info.unit else ""
                shown = "(from the preset)" if default is None else repr(default)
                print(f"  {name} = {shown}{unit}  -- {info.doc} [source: {info.source}]")
    return 0


def _cmd_profiles(args: argparse.Namespace) -> int:
    from virtlab.config import builtin_profiles

    for name in builtin_profiles():
        print(name)
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-commands and their help)."""
    parser = _Parser(
        prog="virtlab",
        description="virtlab simulates how a guest's disk and network I/O is virtualized -- "
                    "native, container (shared kernel), paravirtual (shared rings) and "
                    "emulated (trap-and-emulate devices) -- and what each costs.",
        epilog="Start with 'virtlab compare' (the main comparison), then 'virtlab trace "
               "--approach emulated' to follow one request. Time is in microseconds.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("compare", help="compare the four approaches on a scenario (main job)",
                       description="Run the scenario once per approach (every guest switched to "
                                   "it), with common random numbers, and print throughput, "
                                   "latency, CPU time per request by where it was spent, and "
                                   "VM exits, notifications and interrupts per request.")
    _add_run_options(p, config_required=False)
    p.add_argument("--approaches", default="native,container,paravirtual,emulated",
                   help="comma-separated approaches to compare (default: all four)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("run", help="run a scenario file as written",
                       description="Run a scenario file with the approaches its guests name.")
    _add_run_options(p, config_required=True)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("trace", help="follow one request event by event",
                       description="Run one request at a time through one guest's path and "
                                   "print every step with its simulated time: CPU work by "
                                   "context, exits, kicks, interrupts, wire and device time.")
    p.add_argument("--config", metavar="FILE.toml", help="scenario file (default: built-in)")
    p.add_argument("--profile", metavar="NAME|FILE", help="hardware/cost profile")
    p.add_argument("--approach", choices=("native", "container", "paravirtual", "emulated"),
                   help="switch the guest to this approach")
    p.add_argument("--guest", help="guest to trace (default: the first)")
    p.add_argument("--workload", help="workload name or kind (rr, stream, block)")
    p.add_argument("--requests", type=int, default=1, help="requests to trace (default 1)")
    p.add_argument("-s", "--seed", type=int, default=0, help="root seed (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter (repeatable)")
    _add_cpu_support_option(p)
    p.set_defaults(func=_cmd_trace)

    p = sub.add_parser("params", help="list every model parameter with its default and source")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables (for docs)")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("profiles", help="list the built-in profiles")
    p.set_defaults(func=_cmd_profiles)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: Any) -> None:
    """Commands from sub-packages (the Linux demo, the labs), registered if present."""
    import importlib

    for module_name in ("virtlab.cli_studies", "virtlab.linux.commands", "virtlab.labs",
                        "virtlab.paths.emulation.commands"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Absent optional sub-package: skip it. A missing dependency *inside* it is a bug.
            if err.name is None or not module_name.startswith(err.name):
                raise
            continue
        module.add_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"virtlab: error: {err}", file=sys.stderr)
        return 2
    except PreflightError as err:
        print(f"virtlab: cannot run here: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("virtlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; silence the flush at exit as well.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
