"""``virtlab sweep``, ``virtlab capacity`` and ``virtlab plot``: what-if studies over many runs.

The library side lives in :mod:`virtlab.sweep`, :mod:`virtlab.capacity` and
:mod:`virtlab.plot`; this module parses flags, draws progress, writes data files and prints.
Results go to stdout; progress, warnings and the store's summary to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

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

__all__ = ["add_commands", "run_compare", "write_outputs"]

_T = TypeVar("_T")

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
    for key in factors:
        check_field_path(scenario, key, "--vary")
    approaches = approach_list(args.approaches)
    points = math.prod(len(v) for v in factors.values()) * len(approaches or [None])
    check_budget([scenario], args.replications, args.jobs, args.force, points=points)


# Shared plumbing ------------------------------------------------------------------------------

def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before a long study, not after it, on conflicting engines or unwritable outputs."""
    if args.scheduler and args.jobs is not None:
        raise ConfigError("--jobs", "cannot be combined with --scheduler (the Dask cluster's "
                                    "workers set the parallelism)")
    for flag in ("csv", "parquet"):
        target = getattr(args, flag, None)
        if target is None:
            continue
        parent = Path(target).resolve().parent
        if not parent.is_dir():
            raise ConfigError(f"--{flag}", f"{target}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise ConfigError(f"--{flag}", f"{target}: directory {parent} is not writable")


def write_outputs(frame: Any, args: argparse.Namespace, study: str) -> None:
    """Write ``frame`` to ``--csv`` / ``--parquet`` (atomically: temp file, then rename)."""
    if "study" not in frame.columns:
        frame.insert(0, "study", study)
    for flag, write in (("csv", lambda f, p: f.to_csv(p, index=False)),
                        ("parquet", lambda f, p: f.to_parquet(p, index=False))):
        target = getattr(args, flag, None)
        if target is not None:
            _write_atomically(frame, target, write, f"--{flag}")


def _write_atomically(frame: Any, target: str, write: Callable[[Any, str], None],
                      flag: str) -> None:
    """``write(frame, tmp)`` to a temporary file beside ``target``, then rename it over it."""
    path = Path(target)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                   dir=path.resolve().parent)
    os.close(handle)
    try:
        write(frame, tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise ConfigError(flag, f"cannot write {target}: {err}") from err
    finally:
        Path(tmp).unlink(missing_ok=True)


def _progress(args: argparse.Namespace, desc: str, total: int | None = None) -> Any:
    from virtlab.progress import Progress, progress_wanted

    return Progress(total, desc, enabled=progress_wanted(args.quiet))


def _store(args: argparse.Namespace, progress: Any) -> Any:
    from virtlab.store import ResultStore, default_store_dir

    if args.no_store:
        return None
    root = Path(args.store) if args.store else default_store_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError("--store", f"cannot create {root}: {err}") from err
    return ResultStore(root, warn=lambda message: progress.write(f"virtlab: warning: {message}"))


def _store_summary(store: Any, args: argparse.Namespace) -> None:
    if store is not None and not args.quiet:
        print(f"virtlab: store {store.root}: {store.hits} run(s) reused, {store.writes} "
              f"computed and stored", file=sys.stderr)


@contextlib.contextmanager
def _interruptible(store: Any) -> Iterator[None]:
    """SIGTERM stops a study like Ctrl-C; either way the message says what is kept."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        where = (f"; {store.writes} run(s) computed in this session are in the store "
                 f"{store.root}: rerun the same command to resume" if store is not None
                 else "")
        print(f"virtlab: interrupted{where}", file=sys.stderr)
        raise _Interrupted from None
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Interrupted(Exception):
    """A study stopped by a signal (exit status 130)."""


def _run_study(args: argparse.Namespace, desc: str, total: int | None,
               work: Callable[[Any, Any], _T]) -> _T | None:
    """Run ``work(store, progress)`` with a progress bar, the results store and signals handled.

    Returns what ``work`` returns, or None if SIGINT/SIGTERM stopped it (the message printed
    says what the store keeps; the caller exits with status 130). The progress bar is closed
    either way; the store's summary is printed only after a study that ran to its end.
    """
    progress = _progress(args, desc, total)
    try:
        store = _store(args, progress)
        with _interruptible(store):
            result = work(store, progress)
    except _Interrupted:
        return None
    finally:
        progress.close()
    _store_summary(store, args)
    return result


def run_compare(scenario: Any, approaches: Sequence[str] | None, args: argparse.Namespace) -> Any:
    """``compare``/``run``: the comparison on the chosen engine, with progress and data files."""
    from virtlab.experiment import compare

    _check_outputs(args)
    count = (1 if approaches is None else len(approaches)) * args.replications
    progress = _progress(args, "compare", count)
    comparison = compare(scenario, approaches, seed=args.seed, replications=args.replications,
                         jobs=args.jobs, scheduler=args.scheduler, progress=progress)
    progress.close()
    write_outputs(comparison.to_frame(), args, "compare")
    return comparison


def check_records_target(target: str) -> None:
    """``--records``: a .csv or .parquet file in a writable folder (checked before any run)."""
    path = Path(target)
    if path.suffix not in (".csv", ".parquet"):
        raise ConfigError("--records", f"{target}: the file must end in .csv or .parquet")
    parent = path.resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError("--records", f"{target}: directory {parent} does not exist or is "
                                       "not writable")


def write_records(scenario: Any, approaches: Sequence[str] | None,
                  args: argparse.Namespace) -> None:
    """Write the per-request records of replication 0 of each approach to ``--records``.

    Runs never keep per-request data (their summaries stream), so the rows come from running
    replication 0 again in this process with records on: a run is a function of its scenario,
    seed and replication, so these are the requests the table's first replication summarised.
    """
    import pandas as pd

    from virtlab.model import run

    variants = ([scenario] if approaches is None
                else [scenario.with_approach(a) for a in approaches])
    frames = []
    for variant in variants:
        frame = run(variant, args.seed, replication=0, records=True).to_frame()
        frame.insert(0, "replication", 0)
        frame.insert(0, "seed", args.seed)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if Path(args.records).suffix == ".csv":
        _write_atomically(frame, args.records, lambda f, p: f.to_csv(p, index=False),
                          "--records")
    else:
        _write_atomically(frame, args.records, lambda f, p: f.to_parquet(p, index=False),
                          "--records")
    print(f"virtlab: {len(frame):,} request records written to {args.records}",
          file=sys.stderr)


def _add_study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="DIR",
                        help="results store: each run is kept as it completes, and a rerun "
                             "reuses it (default: $VIRTLAB_STORE or ~/.cache/virtlab/store)")
    parser.add_argument("--no-store", action="store_true",
                        help="neither read nor write the results store")


# sweep ----------------------------------------------------------------------------------------

def _cmd_sweep(args: argparse.Namespace) -> int:
    from virtlab.experiment import dumps_json
    from virtlab.sweep import grid_size, sweep

    _check_counts(args)
    _check_outputs(args)
    factors = _parse_vary(args.vary)
    approaches = approach_list(args.approaches)
    if approaches == []:
        raise ConfigError("--approaches", "name at least one of native, container, "
                                          "paravirtual, emulated")
    scenario = build_scenario(args.config, args.profile, args.set, args.duration, args.warmup)
    _check_study(args, scenario, factors)
    runs = grid_size(factors) * (len(approaches) if approaches else 1) * args.replications
    points = _run_study(args, "sweep", runs, lambda store, progress: sweep(
        scenario, factors, approaches, seed=args.seed, replications=args.replications,
        jobs=args.jobs, scheduler=args.scheduler, store=store, progress=progress))
    if points is None:
        return 130
    write_outputs(points.to_frame(), args, "sweep")
    if args.json:
        print(dumps_json(points.to_json_dict()))
        return 1 if points.failed else 0
    header = (f"{'point':<32} {'approach':<12} {'guest.workload':<16} {'req/s':>12} "
              f"{'mean µs':>10} {'p99 µs':>10}")
    print(header)
    for point in points:
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in point.values.items())
        if point.comparison is None:
            print(f"{label:<32} FAILED: {point.error}")
            continue
        for entry in point.comparison.entries:
            if entry.error:
                print(f"{label:<32} {entry.approach:<12} FAILED: {entry.error}")
                continue
            m = entry.means
            print(f"{label:<32} {entry.approach:<12} {entry.guest + '.' + entry.workload:<16} "
                  f"{m['throughput_per_s']:>12,.0f} {m['latency_mean_us']:>10.1f} "
                  f"{m['latency_p99_us']:>10.1f}")
    if points.failed:
        print(f"{points.failed} point(s) failed; the others are complete.")
    _print_provenance(args, scenario, [f"vary {k}={v}" for k, v in factors.items()])
    return 1 if points.failed else 0


def _print_provenance(args: argparse.Namespace, scenario: Any, extra: list[str]) -> None:
    """After the results: how to get them again (seed, replications, profile, changes, hash)."""
    from virtlab.cli import base_scenario
    from virtlab.report import provenance_line

    base = base_scenario(args.config, args.profile)
    line = provenance_line(scenario, base if base is not None else scenario, seed=args.seed,
                           replications=args.replications, config=args.config)
    print()
    print(" · ".join([*extra, line]))


# capacity -------------------------------------------------------------------------------------

def _cmd_capacity(args: argparse.Namespace) -> int:
    from virtlab.capacity import MIN_REQUESTS_FOR_P99, RESOURCE_LABELS, capacity_search
    from virtlab.experiment import dumps_json
    from virtlab.paths import APPROACHES

    _check_counts(args)
    _check_outputs(args)
    limit = parse_duration_us(args.p99_limit, "--p99-limit")
    if not 1 <= args.max_guests <= MAX_GUESTS:
        raise ConfigError("--max-guests", f"must be an integer in [1, {MAX_GUESTS}], "
                                          f"got {args.max_guests}")
    if args.max_replications < args.replications:
        raise ConfigError("--max-replications", f"must be >= --replications "
                                                f"({args.replications}), got "
                                                f"{args.max_replications}")
    scenario = build_scenario(args.config, args.profile, args.set, args.duration, args.warmup)
    approaches = approach_list(args.approaches) or list(APPROACHES)
    from virtlab.sweep import with_guest_copies

    def search(store: Any, progress: Any) -> Any:
        # The budget is checked once the store is usable (a bad --store is reported first).
        # The search visits about 2 log2(N) + 1 guest counts per approach (galloping, then
        # bisection), none larger than N; replications are budgeted at their starting number
        # (the estimate is an upper bound already; only points near the limit get more).
        visits = 2 * math.ceil(math.log2(args.max_guests + 1)) + 1
        check_budget([with_guest_copies(scenario, args.max_guests)], args.replications,
                     args.jobs, args.force, points=len(approaches) * visits)
        return capacity_search(scenario, limit, args.max_guests, approaches, seed=args.seed,
                               replications=args.replications,
                               max_replications=args.max_replications, jobs=args.jobs,
                               scheduler=args.scheduler, store=store, progress=progress)

    result = _run_study(args, "capacity", None, search)
    if result is None:
        return 130
    write_outputs(result.to_frame(), args, "capacity")
    for row in result.uncertain:
        print(f"virtlab: warning: {row.approach} with {row.guests} guests: the limit is inside "
              f"the {result.confidence:.0%} CI of the worst p99 ({row.worst_p99_us:.1f} ± "
              f"{row.worst_p99_ci_us:.1f} µs) after {row.replications} replications; decided "
              "by the mean (raise --max-replications or --duration)", file=sys.stderr)
    for row in result.thin:
        print(f"virtlab: warning: {row.approach} with {row.guests} guests: a p99 rests on "
              f"only {row.min_requests} requests (< {MIN_REQUESTS_FOR_P99}); raise --duration",
              file=sys.stderr)
    failed = sum(1 for r in result if r.error)
    if args.json:
        print(dumps_json(result.to_json_dict()))
        return 1 if failed else 0
    for approach in approaches:
        answer = result.answers[approach]
        name, value = answer.bottleneck
        bound = "" if answer.bounded else " (at least: the largest count tried still fits)"
        if answer.limit_row is not None and not answer.bounded:
            where = f"most utilised at {answer.limit_row.guests} guests"
        elif answer.limit_row is not None:
            where = f"bottleneck at {answer.limit_row.guests} guests"
        else:
            where = "bottleneck"
        print(f"\n{approach}: {answer.guests} guest(s) fit (worst p99 <= {limit:g} µs){bound}; "
              f"{where}: {RESOURCE_LABELS.get(name, name)} at {value:.0%} of capacity; "
              f"{answer.points} point(s) evaluated")
        for r in result:
            if r.approach != approach:
                continue
            status = ("FAILED: " + r.error if r.error else
                      ("fits" if r.fits else "over limit") + ("" if r.decided else " (close)"))
            ci = f" ± {r.worst_p99_ci_us:>7.1f}" if r.worst_p99_ci_us == r.worst_p99_ci_us \
                else " " * 10
            print(f"  {r.guests:>3} guests  worst p99 {r.worst_p99_us:>10.1f}{ci} µs  "
                  f"total {r.total_throughput_per_s:>12,.0f} req/s  x{r.replications:<3} "
                  f"{status}")
    _print_provenance(args, scenario, [
        f"p99-limit {limit:g} µs", f"guest template {scenario.guests[0].name} "
        f"({', '.join(w.name for w in scenario.guests[0].workloads)})",
        f"host cores {scenario.host.cores}",
        f"replications up to {args.max_replications} near the limit"])
    return 1 if failed else 0


# plot -----------------------------------------------------------------------------------------

def _cmd_plot(args: argparse.Namespace) -> int:
    from virtlab.plot import plot_file

    plot_file(args.result, args.output, metric=args.metric, x=args.x)
    if not args.quiet:
        print(f"virtlab: wrote {args.output}", file=sys.stderr)
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``sweep``, ``capacity`` and ``plot``."""
    p = subparsers.add_parser(
        "sweep", help="run a grid of parameter values (what-if studies)",
        description="Run every combination of the --vary values, each under the given "
                    "approaches, in parallel (local processes, or a Dask cluster with "
                    "--scheduler). Every run is stored as it completes; an interrupted sweep "
                    "resumes when rerun. A failed point is reported and the others are kept.",
        epilog="Example: virtlab sweep --vary guests[0].workloads[0].in_flight=1,4,16 "
               "--approaches paravirtual,emulated --csv sweep.csv")
    _add_run_options(p, config_required=False, tables=False)
    _add_study_options(p)
    p.add_argument("--vary", action="append", default=[], required=True,
                   metavar="KEY=V1,V2,...", help="a factor and its values (repeatable)")
    p.add_argument("--approaches", help="comma-separated approaches (default: the scenario's)")
    p.set_defaults(func=_cmd_sweep)

    p = subparsers.add_parser(
        "capacity", help="how many copies of a guest fit before p99 breaks?",
        description="Clone the scenario's first guest and search, per approach, for the "
                    "largest guest count whose worst guest p99 stays under the limit "
                    "(galloping, then bisection; replications are added until the limit is "
                    "outside the confidence interval). Names the bottleneck at the limit.")
    _add_run_options(p, config_required=False, tables=False)
    _add_study_options(p)
    p.add_argument("--p99-limit", required=True, metavar="TIME",
                   help="latency limit for the worst guest's p99, e.g. 200us or 1ms")
    p.add_argument("--max-guests", type=int, default=8, help="largest guest count (default 8)")
    p.add_argument("--max-replications", type=int, default=12,
                   help="replications per point at most, when the limit is close (default 12)")
    p.add_argument("--approaches", help="comma-separated approaches (default: all)")
    p.set_defaults(func=_cmd_capacity)

    p = subparsers.add_parser(
        "plot", help="draw a sweep or capacity result (CSV/Parquet) to PNG or SVG",
        description="Draw a file written by 'sweep --csv/--parquet' (a metric against the "
                    "first varied key, one line per approach and workload) or by 'capacity "
                    "--csv/--parquet' (worst p99 against guests, with the limit), with error "
                    "bars from the confidence intervals.")
    p.add_argument("result", metavar="RESULT_FILE", help="a .csv or .parquet result")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png|OUT.svg",
                   help="image to write (.png, .svg or .pdf)")
    p.add_argument("--metric", default=None,
                   help="sweep: metric to draw (default latency_p99_us)")
    p.add_argument("--x", default=None, metavar="KEY", help="sweep: varied key on the x axis "
                                                            "(default: the first)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_cmd_plot)
