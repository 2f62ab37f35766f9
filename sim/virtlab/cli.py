"""The ``virtlab`` command line.

``main(argv) -> int`` does the work; nothing runs at import. Every user error (a bad flag, a
bad value in a scenario file) ends as one line ``virtlab: error: <field>: <message>`` and exit
status 2, never a traceback. A failure inside virtlab itself is one line ``virtlab: internal
error: ...`` and exit status 1 (the traceback only with ``--debug``). The first Ctrl-C or
``SIGTERM`` stops the run in order: worker processes are ended (and checked), further signals
are ignored while that happens, and the exit status is 130 or 143.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tomllib
from collections.abc import Sequence
from typing import Any, NoReturn

from virtlab.errors import ConfigError, PreflightError

__all__ = ["main", "build_scenario", "parse_duration_us", "approach_list", "check_budget",
           "cap_jobs", "install_signal_handlers", "Interrupted"]

_DURATION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s)?\s*$")
_UNIT_US = {"us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6}
#: ``trace --requests`` at most this many (each is printed event by event).
MAX_TRACE_REQUESTS = 10_000
#: Flags whose value may start with '-' (a negative number must reach the validator, not be
#: taken for an option): ``--duration -5ms`` becomes ``--duration=-5ms``.
_VALUE_FLAGS = frozenset({
    "--duration", "--warmup", "-s", "--seed", "-r", "--replications", "-j", "--jobs",
    "--requests", "--max-guests", "--p99-limit", "--cpu-ghz", "--set", "--vary", "--timeout",
    "--seconds", "--rounds"})
_NEGATIVE = re.compile(r"^-[0-9.]")


# Signals ---------------------------------------------------------------------------------------
class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (``signum``); exit status ``128 + signum``.

    ``args`` is ``(signum,)`` so that code which re-creates an exception from its type and
    arguments (SimPy does, when a process fails) gets an equal one back.
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


_HANDLER_PID: int | None = None
_STOPPING: list[int] = []   # signals received; the first decides the exit status
_CLOSING: list[bool] = []   # set once the orderly stop runs; later signals are ignored


_STOPPED_WORKERS: set[int] = set()


def _stop_children() -> None:
    """Ask every worker process of this run to end (SIGTERM); :func:`_reap_children` checks."""
    import multiprocessing

    for child in multiprocessing.active_children():
        try:
            child.terminate()
            if child.pid is not None:
                _STOPPED_WORKERS.add(child.pid)
        except (OSError, ValueError):
            pass


def _reap_children(deadline_s: float = 5.0) -> list[int]:
    """Wait for the workers to end; kill those that do not; return pids still alive."""
    import multiprocessing
    import time

    end = time.monotonic() + deadline_s
    children = multiprocessing.active_children()
    for child in children:
        child.join(max(0.0, end - time.monotonic()))
    for child in children:
        if child.is_alive():
            child.kill()
            child.join(1.0)
    return [c.pid for c in children if c.is_alive() and c.pid is not None]


def _on_signal(signum: int, frame: Any) -> None:
    if os.getpid() != _HANDLER_PID:
        # A forked worker: the terminal's Ctrl-C reaches the whole group, and the main process
        # stops the workers itself; a SIGTERM (from it) ends the worker at once, quietly.
        if signum == signal.SIGINT:
            return
        os._exit(128 + signum)
    if _CLOSING:
        return  # the orderly stop is under way; a second Ctrl-C must not interrupt it
    _STOPPING.append(signum)
    _stop_children()
    # Raised again on a later signal until the stop begins, in case something swallowed it.
    raise Interrupted(_STOPPING[0])


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM start an orderly stop (:class:`Interrupted`); later ones are ignored.

    Installed by the ``virtlab`` program itself (``python -m virtlab`` does it before any other
    import), never by :func:`main` called as a library function with an argument list.
    """
    import threading

    global _HANDLER_PID
    _HANDLER_PID = os.getpid()
    _STOPPING.clear()
    _CLOSING.clear()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    # Once a stop has begun, the stop's own exception may land where Python can only report it
    # ("Exception ignored in ...", e.g. inside an at-fork hook), and the executor's helper thread
    # may fail on the futures it cancelled (a CPython 3.11 race). Both are consequences of the
    # stop, which the closing line reports; before a stop, both hooks behave as usual.
    default_unraisable, default_thread = sys.unraisablehook, threading.excepthook

    def unraisable(info: Any) -> None:
        if not _STOPPING:
            default_unraisable(info)

    def thread_failed(info: Any) -> None:
        if not _STOPPING:
            default_thread(info)

    sys.unraisablehook = unraisable
    threading.excepthook = thread_failed


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the flag, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        match = re.match(r"^argument ([^:]+): (.*)$", message)
        if match:
            flag, what = match.groups()
            what = re.sub(r"^invalid int value: (.*)$", r"must be an integer, got \1", what)
            what = re.sub(r"^invalid float value: (.*)$", r"must be a number, got \1", what)
            choice = re.match(r"^invalid choice: '(.*)' \(choose from (.*)\)$", what)
            if choice:
                options = re.findall(r"'([^']*)'", choice.group(2))
                what += _did_you_mean(choice.group(1), options)
            message = f"{flag}: {what}"
        else:
            required = re.match(r"^the following arguments are required: (.*)$", message)
            if required:
                message = f"{required.group(1)}: required"
        message = _one_line(f"virtlab: error: {message} (see '{self.prog} --help')")
        self.exit(2, message + "\n")


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    """``"; did you mean X?"`` for the closest of ``options``, or nothing if none is close."""
    import difflib

    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _one_line(text: str) -> str:
    """Escape line breaks (a user's value may contain one): an error is exactly one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def number_in(low: float, high: float, integer: bool = False) -> Any:
    """An argparse ``type``: a finite number in ``[low, high]`` (an integer if asked)."""
    import math

    def parse(text: str) -> float | int:
        try:
            value: float | int = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise argparse.ArgumentTypeError(f"must be {kind} in [{low:g}, {high:g}], "
                                             f"got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}], got {text}")
        return value

    return parse


def parse_duration_us(text: str, field: str, *, allow_zero: bool = False) -> float:
    """Parse ``"30ms"``, ``"0.5s"`` or ``"2000us"`` into µs; a unit is required (except 0)."""
    import math

    match = _DURATION.match(text)
    if not match:
        raise ConfigError(field, f"must be a duration such as 30ms, 0.5s or 2000us, "
                                 f"got {text!r}")
    value = float(match.group(1))
    unit = match.group(2)
    if unit is None and value != 0:
        raise ConfigError(field, f"add a unit: {match.group(1)}s, {match.group(1)}ms or "
                                 f"{match.group(1)}us, got {text!r}")
    value *= _UNIT_US[unit or "us"]
    if not math.isfinite(value):
        raise ConfigError(field, f"must be a finite duration, got {text!r}")
    if value < 0 or (value == 0 and not allow_zero):
        allowed = "zero or positive" if allow_zero else "positive"
        raise ConfigError(field, f"must be {allowed}, got {text!r}")
    return value


def _parse_value(text: str, field: str = "--set") -> Any:
    """A ``--set``/``--vary`` value: one TOML value, or else the text as a string."""
    try:
        document = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        if "\n" in text or "\r" in text:
            raise ConfigError(field, f"a value must be on one line, got {text!r}") from None
        return text
    except RecursionError:
        raise ConfigError(field, "the value is nested too deeply") from None
    if set(document) != {"v"}:
        raise ConfigError(field, f"expected one value, got more: {text!r}")
    from virtlab.config import check_nesting

    check_nesting(document["v"], field)
    return document["v"]


def _apply_set(data: dict[str, Any], assignment: str) -> None:
    from virtlab.sweep import apply_assignment

    if "=" not in assignment:
        raise ConfigError("--set", f"expected KEY=VALUE (e.g. paravirtual.ring_size=512), "
                                   f"got {assignment!r}")
    key, value = assignment.split("=", 1)
    apply_assignment(data, key, _parse_value(value, f"--set {key.strip()}"))


def build_scenario(config: str | None, profile: str | None, sets: Sequence[str] = (),
                   duration: str | None = None, warmup: str | None = None) -> Any:
    """The scenario the flags describe: file (or default), profile, ``--set`` and durations."""
    from pathlib import Path

    from virtlab.config import check_nesting, default_scenario, read_toml_file, scenario_from_dict

    data: dict[str, Any] = {}
    base_dir = None
    if config is not None:
        if not config.strip():
            raise ConfigError("--config", "must be a path to a .toml file, got an empty string")
        data = read_toml_file(config, "--config")
        base_dir = Path(config).parent
    if profile is not None and not profile.strip():
        from virtlab.config import builtin_profiles

        raise ConfigError("--profile", f"must be one of {', '.join(builtin_profiles())} or a "
                                       f"path to a .toml file, got an empty string")
    if "guests" not in data:
        data["guests"] = default_scenario().to_dict()["guests"]
    for assignment in sets:
        _apply_set(data, assignment)
    check_nesting(data, "--set")
    if duration is not None:
        data["duration_us"] = parse_duration_us(duration, "--duration")
    if warmup is not None:
        data["warmup_us"] = parse_duration_us(warmup, "--warmup", allow_zero=True)
    try:
        scenario = scenario_from_dict(data, profile, base_dir=base_dir)
    except ConfigError as err:
        # Name the flag the user typed when the window check fails on a flag's value.
        if err.field == "warmup_us" and (duration is not None or warmup is not None):
            from virtlab.config import Scenario

            fields = Scenario.__dataclass_fields__
            end = data.get("duration_us", fields["duration_us"].default)
            start = data.get("warmup_us", fields["warmup_us"].default)
            raise ConfigError("--duration" if duration is not None else "--warmup",
                              f"the warm-up ({start:g} µs) must end before the duration "
                              f"({end:g} µs): raise --duration or lower --warmup (0 is "
                              f"allowed)") from None
        raise
    return scenario


def _field_paths(node: Any, prefix: str = "") -> list[str]:
    """Every leaf path of a scenario dict, spelled as ``--set`` spells it."""
    paths: list[str] = []
    stack: list[tuple[Any, str]] = [(node, prefix)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else k) for k, v in value.items())
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
        else:
            paths.append(path)
    return sorted(paths)


def check_field_path(scenario: Any, key: str, flag: str) -> None:
    """Refuse a key that names no field of ``scenario``, naming the full paths that fit."""
    from virtlab.sweep import apply_assignment

    paths = _field_paths(scenario.to_dict())
    try:
        apply_assignment(scenario.to_dict(), key, None)  # a fresh copy: only the syntax counts
    except ConfigError as err:
        raise ConfigError(flag, f"{err.field}: {err.message}") from None
    if key.strip() in paths:
        return
    last = re.split(r"[.\[\]]", key.strip().rstrip("]"))[-1]
    matches = [p for p in paths if re.split(r"[.\[\]]", p)[-1] == last]
    hint = (f"did you mean {' or '.join(matches[:4])}?" if matches
            else "see 'virtlab params' for the fields")
    raise ConfigError(flag, f"{key.strip()}: no such field in this scenario; {hint}")


def _add_run_options(parser: argparse.ArgumentParser, config_required: bool,
                     tables: bool = True) -> None:
    """Add the flags of every command that runs scenarios.

    ``tables`` adds compare/run's report flags (``--breakdown``, ``--echo-params``), which
    sweep and capacity do not print.
    """
    parser.add_argument("--config", required=config_required, metavar="FILE.toml",
                        help="scenario file (see examples/); default: the built-in scenario")
    parser.add_argument("--profile", metavar="NAME|FILE",
                        help="hardware/cost profile: a built-in name (virtlab profiles) or a "
                             "TOML file such as one written by 'virtlab calibrate'")
    parser.add_argument("-s", "--seed", type=int, default=0,
                        help="root seed; the same seed gives the same numbers (default 0)")
    parser.add_argument("--duration", metavar="TIME",
                        help="end of the measurement window, e.g. 30ms, 0.5s or 2000us (a unit "
                             "is required)")
    parser.add_argument("--warmup", metavar="TIME",
                        help="discard requests completed before this, e.g. 5ms (0 is allowed)")
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
    if tables:
        parser.add_argument("--breakdown", action="store_true",
                            help="also print where each request's time went (latency phases) "
                                 "and its VM exits by reason (emulated path)")
        parser.add_argument("--echo-params", action="store_true",
                            help="also print every effective parameter after the results "
                                 "(--json always includes them)")
    parser.add_argument("--force", action="store_true",
                        help="run even if the estimated size exceeds the budget (100 million "
                             "simulated events or 2 GiB of memory; docs/simulation-practice.md)")


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Where runs execute, progress, and the results as data files (virtlab.cli_studies)."""
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="run on this Dask cluster instead of local processes")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar (it is drawn only when stderr is a terminal)")
    parser.add_argument("--csv", metavar="FILE", help="also write the results as CSV "
                                                      "(columns: docs/results.md)")
    parser.add_argument("--parquet", metavar="FILE", help="also write the results as Parquet")


def _add_records_option(parser: argparse.ArgumentParser) -> None:
    """``--records FILE`` (compare and run): per-request rows, which runs never keep otherwise."""
    parser.add_argument("--records", metavar="FILE.csv|FILE.parquet",
                        help="also write one row per request (replication 0 of each approach, "
                             "warm-up included; columns: docs/results.md)")


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
    _check_seed(args.seed)


def _check_seed(seed: int) -> None:
    if seed < 0 or seed >= 2**63:
        raise ConfigError("--seed", f"must be an integer in [0, 2**63), got {seed}")


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def cap_jobs(jobs: int, tasks: int, quiet: bool = False) -> int:
    """``jobs`` capped at the CPU count and the number of tasks (said on stderr if capped)."""
    cpus = _cpus()
    limit = max(1, min(cpus, tasks))
    if jobs > limit and not quiet:
        print(f"virtlab: note: --jobs {jobs} capped at {limit} ({cpus} CPU(s) available, "
              f"{tasks} run(s) to do)", file=sys.stderr)
    return min(jobs, limit)


def check_budget(scenarios: Sequence[Any], replications: int, jobs: int | None, force: bool,
                 points: float = 1) -> None:
    """Refuse (unless ``force``) a run estimated above the event or memory budget.

    ``scenarios`` are the distinct variants of one point; ``points`` multiplies them (a sweep).
    ``jobs`` None: one process per CPU (the default engine).
    """
    from virtlab.budget import EVENT_BUDGET, MEMORY_BUDGET_BYTES, estimate_total

    workers = _cpus() if jobs is None else min(jobs, _cpus())
    events, memory, largest = estimate_total(scenarios, replications, workers)
    events *= points
    if (events <= EVENT_BUDGET and memory <= MEMORY_BUDGET_BYTES) or force:
        return
    raise ConfigError("budget", f"this run is estimated at up to {events:.3g} simulated events "
                                f"and {memory / 2**30:.2g} GiB of memory (mostly "
                                f"{largest.heaviest}); the budget is {EVENT_BUDGET:.0e} events "
                                f"and {MEMORY_BUDGET_BYTES / 2**30:g} GiB: shorten --duration, "
                                f"lower the load, rings or replications, or pass --force")


def _warn(lines: Sequence[str]) -> None:
    for line in lines:
        print(_one_line(f"virtlab: warning: {line}"), file=sys.stderr)


def _report(comparison: Any, scenario: Any, args: argparse.Namespace,
            base: Any = None, approaches: Sequence[str] | None = ()) -> None:
    """Warnings on stderr; then the answer first: tables, provenance, and on request the echo."""
    from virtlab.advice import comparison_warnings
    from virtlab.report import comparison_table, effective_parameters, output_width, provenance_line

    _warn(comparison_warnings(comparison, scenario, replications=args.replications, base=base,
                              approaches=approaches))
    if args.json:
        print(comparison.to_json())
        return
    print(comparison_table(comparison, width=output_width()))
    from virtlab.report import disk_limits_table, scheduling_table

    disk = disk_limits_table(comparison, width=output_width())
    if disk:
        print()
        print(disk)

    scheduling = scheduling_table(comparison)
    if scheduling is not None:
        print()
        print(scheduling)
    if getattr(args, "breakdown", False):
        from virtlab.report import breakdown_table

        print()
        print(breakdown_table(comparison, width=output_width()))
        from virtlab.report import ring_table

        rings = ring_table(comparison)
        if rings:
            print(rings)
    print()
    print(provenance_line(scenario, base if base is not None else scenario, seed=args.seed,
                          replications=args.replications, config=args.config))
    if getattr(args, "echo_params", False):
        print("# effective parameters (time in µs)")
        for line in effective_parameters(scenario):
            print(f"  {line}")


def base_scenario(config: str | None, profile: str | None) -> Any:
    """What the run starts from before ``--set`` and the durations.

    That is the scenario file read with the profile, or (no file, or a file valid only with
    the flags) the profile's values on the built-in guests; None if even that is invalid.
    """
    for source in ((config, None) if config is not None else (None,)):
        try:
            return build_scenario(source, profile)
        except ConfigError:
            continue
    return None


def _run_comparison(args: argparse.Namespace, approaches: list[str] | None) -> int:
    from virtlab.cli_studies import run_compare

    _check_counts(args)
    scenario = build_scenario(args.config, args.profile, args.set, args.duration, args.warmup)
    variants = ([scenario] if approaches is None
                else [scenario.with_approach(a) for a in approaches])
    runs = len(variants) * args.replications
    check_budget(variants, args.replications, args.jobs or min(_cpus(), runs), args.force)
    if args.jobs is not None:
        args.jobs = cap_jobs(args.jobs, runs, quiet=args.quiet)
    if args.records is not None:
        from virtlab.cli_studies import check_records_target

        check_records_target(args.records)
    comparison = run_compare(scenario, approaches, args)
    _report(comparison, scenario, args, base_scenario(args.config, args.profile), approaches)
    if args.records is not None:
        from virtlab.cli_studies import write_records

        write_records(scenario, approaches, args)
    return 1 if any(e.error for e in comparison.entries) else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    return _run_comparison(args, approach_list(args.approaches))


def _cmd_run(args: argparse.Namespace) -> int:
    return _run_comparison(args, None)


def _cmd_trace(args: argparse.Namespace) -> int:
    import dataclasses

    from virtlab.model import run
    from virtlab.trace import ListTracer

    _check_seed(args.seed)
    if not 1 <= args.requests <= MAX_TRACE_REQUESTS:
        raise ConfigError("--requests", f"must be an integer in [1, {MAX_TRACE_REQUESTS}], "
                                        f"got {args.requests}")
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
    # One guest, one workload, one request at a time: the story of each request is unmixed.
    quiet = dataclasses.replace(workload, loop="closed", **_one_in_flight(workload))
    single = dataclasses.replace(scenario, guests=(dataclasses.replace(
        guest, workloads=(quiet,)),), warmup_us=0.0, duration_us=10_000_000.0)
    tracer = ListTracer()
    result = run(single, args.seed, tracer=tracer, max_requests=args.requests, records=True)
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


def approach_list(text: str | None, field: str = "--approaches") -> list[str] | None:
    """Parse ``native,emulated``: known names, at least one, none twice (None: not given)."""
    from virtlab.paths import APPROACHES

    if text is None:
        return None
    allowed = f"a comma-separated list of {', '.join(APPROACHES)}"
    parts = [a.strip() for a in text.split(",")]
    if not any(parts):
        raise ConfigError(field, f"must be {allowed}, got {text!r}")
    if not all(parts):
        raise ConfigError(field, f"has an empty item; must be {allowed}, got {text!r}")
    for approach in parts:
        if approach not in APPROACHES:
            raise ConfigError(field, f"must be {allowed}, got {approach!r}"
                                     f"{_did_you_mean(approach, APPROACHES)}")
    for approach in parts:
        if parts.count(approach) > 1:
            raise ConfigError(field, f"names {approach!r} twice; give each approach once")
    return parts


def _one_in_flight(workload: Any) -> dict[str, Any]:
    from virtlab.workload import BlockIO, BulkStream, CpuHog, RequestResponse

    if isinstance(workload, RequestResponse):
        return {"in_flight": 1}
    if isinstance(workload, CpuHog):
        return {"threads": 1}
    if isinstance(workload, BlockIO):
        return {"iodepth": 1, "jobs": 1}
    if hasattr(workload, "connections"):  # application servers (virtlab.servers)
        return {"connections": 1}
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
    from virtlab.servers import SERVER_TABLES

    tables += SERVER_TABLES
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
    from virtlab.paths import APPROACHES as APPROACH_CHOICES

    parser = _Parser(
        prog="virtlab",
        description="virtlab simulates how a guest's disk and network I/O is virtualized -- "
                    "native, container (shared kernel), passthrough (an assigned device), "
                    "paravirtual (shared rings) and emulated (trap-and-emulate devices) -- and "
                    "what each costs.",
        epilog="Start with 'virtlab compare' (the main comparison), then 'virtlab trace "
               "--approach emulated' to follow one request. Time is in microseconds.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an internal error (may stand anywhere)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("compare", help="compare the five approaches on a scenario (main job)",
                       description="Run the scenario once per approach (every guest switched to "
                                   "it), with common random numbers, and print throughput, "
                                   "latency, CPU time per request by where it was spent, and "
                                   "VM exits, notifications and interrupts per request.")
    _add_run_options(p, config_required=False)
    _add_records_option(p)
    p.add_argument("--approaches", default=",".join(APPROACH_CHOICES),
                   help="comma-separated approaches to compare (default: all)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("run", help="run a scenario file as written",
                       description="Run a scenario file with the approaches its guests name.")
    _add_run_options(p, config_required=True)
    _add_records_option(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("trace", help="follow one request event by event",
                       description="Run one request at a time through one guest's path and "
                                   "print every step with its simulated time: CPU work by "
                                   "context, exits, kicks, interrupts, wire and device time.")
    p.add_argument("--config", metavar="FILE.toml", help="scenario file (default: built-in)")
    p.add_argument("--profile", metavar="NAME|FILE", help="hardware/cost profile")
    p.add_argument("--approach", choices=APPROACH_CHOICES,
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

    for module_name in ("virtlab.cli_studies", "virtlab.cli_servers", "virtlab.linux.commands",
                        "virtlab.labs", "virtlab.paths.emulation.commands"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Absent optional sub-package: skip it. A missing dependency *inside* it is a bug.
            if err.name is None or not module_name.startswith(err.name):
                raise
            continue
        module.add_commands(sub)


def _prepare_argv(argv: Sequence[str] | None) -> tuple[list[str], bool]:
    """Take ``--debug`` out (it may stand anywhere) and glue negative values to their flag."""
    given = list(sys.argv[1:] if argv is None else argv)
    end = given.index("--") if "--" in given else len(given)
    debug = "--debug" in given[:end]
    given = [a for i, a in enumerate(given) if not (a == "--debug" and i < end)]
    out: list[str] = []
    i = 0
    while i < len(given):
        arg = given[i]
        if arg in _VALUE_FLAGS and i + 1 < len(given) and _NEGATIVE.match(given[i + 1]):
            out.append(f"{arg}={given[i + 1]}" if arg.startswith("--") else arg + given[i + 1])
            i += 2
            continue
        out.append(arg)
        i += 1
    return out, debug


def _say(line: str) -> None:
    try:
        print(_one_line(line), file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # stderr is gone too; the exit status still tells


def _silence_stdout() -> None:
    """After a failed write, point fd 1 at /dev/null so the flush at exit cannot fail again."""
    try:
        if sys.stdout is not None and sys.stdout.fileno() == 1:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _closing(signum: int, finished: bool = False) -> int:
    """Finish an orderly stop: end the workers, check they are gone, say so truthfully."""
    _CLOSING.append(True)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:
        pass  # not the main thread (a library caller); nothing to protect
    _stop_children()
    alive = _reap_children()
    workers = len(_STOPPED_WORKERS)
    name = signal.Signals(signum).name
    if finished:
        _say(f"virtlab: interrupted by {name} after the command had finished")
    elif alive:
        _say(f"virtlab: interrupted by {name}; stopped, but worker process(es) "
             f"{', '.join(map(str, alive))} did not end")
    elif workers:
        _say(f"virtlab: interrupted by {name}; stopped, and its {workers} worker process(es) "
             f"have ended")
    else:
        _say(f"virtlab: interrupted by {name}; stopped")
    return 128 + signum


_WRITE_ERRNOS = frozenset({"ENOSPC", "EIO", "EDQUOT", "EFBIG", "EBADF"})


def _is_output_error(err: OSError) -> bool:
    import errno

    names = {getattr(errno, n) for n in _WRITE_ERRNOS if hasattr(errno, n)}
    return err.filename is None and err.errno in names


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status.

    Called without ``argv`` (the ``virtlab`` program) it also installs the signal handlers
    (:func:`install_signal_handlers`); called with an argument list it leaves them alone.
    """
    if argv is None and _HANDLER_PID != os.getpid():
        install_signal_handlers()
    arguments, debug = _prepare_argv(argv)
    try:
        try:
            parser = make_parser()
            args = parser.parse_args(arguments)
        except SystemExit as stop:  # --help, or a parse error already printed as one line
            code = stop.code
            return code if isinstance(code, int) else (0 if code is None else 2)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        status = int(args.func(args))
        sys.stdout.flush()
        if _STOPPING:  # the signal's exception was swallowed somewhere and the run finished
            return _closing(_STOPPING[0], finished=True)
        return status
    except ConfigError as err:
        _say(f"virtlab: error: {err.field or 'input'}: {err.message}")
        return 2
    except PreflightError as err:
        _say(f"virtlab: cannot run here: {err}")
        return 2
    except Interrupted as err:
        return _closing(err.signum)
    except KeyboardInterrupt:
        return _closing(signal.SIGINT)
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as `yes | head` does.
        _silence_stdout()
        return 128 + signal.SIGPIPE
    except OSError as err:
        if _STOPPING and not debug:
            return _closing(_STOPPING[0])
        if not _is_output_error(err):
            if debug:
                raise
            return _internal_error(err)
        _silence_stdout()
        _say(f"virtlab: error: standard output: cannot write the results: "
             f"{err.strerror or err}")
        return 2
    except Exception as err:  # noqa: BLE001 - one line instead of a traceback
        if _STOPPING and not debug:
            # A library swallowed the signal's exception (e.g. mid-import) and then failed.
            return _closing(_STOPPING[0])
        if debug:
            raise
        return _internal_error(err)


def _internal_error(err: BaseException) -> int:
    hint = " (out of memory: lower the load or --jobs)" if isinstance(err, MemoryError) else ""
    text = " ".join(str(err).split())
    if len(text) > 300:
        text = text[:300] + "..."
    _say(f"virtlab: internal error: {type(err).__name__}: {text}{hint} (please report it; rerun "
         f"with --debug for the traceback)")
    return 1
