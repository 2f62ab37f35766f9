"""Plain-text reports for the terminal: the echoed parameters and the comparison table."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from virtlab.config import Scenario
from virtlab.experiment import Comparison, Entry

__all__ = ["effective_parameters", "comparison_table", "breakdown_table", "request_breakdown",
           "scheduling_table"]


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else key, item)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for index, item in enumerate(value):
            yield from _flatten(f"{prefix}[{index}]", item)
    else:
        yield prefix, value


def effective_parameters(scenario: Scenario) -> list[str]:
    """Every effective parameter as ``name = value`` lines (TOML-like)."""
    lines = []
    for name, value in _flatten("", scenario.to_dict()):
        shown = f'"{value}"' if isinstance(value, str) else (
            str(value).lower() if isinstance(value, bool) else f"{value:g}"
            if isinstance(value, float) else str(value))
        lines.append(f"{name} = {shown}")
    return lines


def _num(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1e5:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _pm(entry: Entry, metric: str, digits: int = 1) -> str:
    mean = entry.means[metric]
    half = entry.half_widths.get(metric, float("nan"))
    if isinstance(half, float) and not math.isnan(half) and half > 0:
        return f"{_num(mean, digits)}±{_num(half, digits)}"
    return _num(mean, digits)


def _blocks(entries: list[Entry], header: str, format_row: Callable[[Entry], str]) -> list[str]:
    """One block per guest workload (in order of first appearance), one row per approach.

    A failed entry gets a ``FAILED`` row instead of ``format_row``.
    """
    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.guest, e.workload), []).append(e)
    out = []
    for (guest, workload), rows in groups.items():
        out += [f"== {guest}.{workload} ({rows[0].kind}) ==", header]
        out += [f"{e.approach:<12} FAILED: {e.error}" if e.error is not None else format_row(e)
                for e in rows]
        out.append("")
    return out


@dataclass(frozen=True)
class Column:
    """One column of a fitted table: its heading, how a row's cell is made, and its rank.

    Columns of a higher ``drop_rank`` leave first when the table is too wide (rank 0 stays).
    ``only_if_dropped`` names columns whose absence makes this one appear (a CPU total in
    place of the split).
    """

    heading: str
    cell: Callable[[Entry], str]
    drop_rank: int = 0
    left: bool = False
    only_if_dropped: tuple[str, ...] = ()


def _comparison_columns() -> list[Column]:
    split = ("cpu guest", "exit", "backend", "host")
    return [
        Column("approach", lambda e: e.approach, 0, left=True),
        Column("req/s", lambda e: _pm(e, "throughput_per_s", 0), 0),
        Column("mean µs", lambda e: _pm(e, "latency_mean_us", 1), 0),
        Column("p99 µs", lambda e: _num(e.means["latency_p99_us"]), 1),
        Column("cpu µs/req", lambda e: _num(e.means["cpu_total_us"], 2), 2,
               only_if_dropped=split),
        Column("cpu guest", lambda e: _num(e.means["cpu_guest_us"], 2), 4),
        Column("exit", lambda e: _num(e.means["cpu_exit_us"], 2), 4),
        Column("backend", lambda e: _num(e.means["cpu_backend_us"], 2), 4),
        Column("host", lambda e: _num(e.means["cpu_host_kernel_us"], 2), 4),
        Column("exits", lambda e: _num(e.means["exits_per_request"], 2), 3),
        Column("notif", lambda e: _num(e.means["notifications_per_request"], 2), 5),
        Column("irqs", lambda e: _num(e.means["interrupts_per_request"], 2), 5),
        Column("MB/s", lambda e: _num(e.means["throughput_bytes_per_s"] / 1e6, 1), 6),
        Column("p50 µs", lambda e: _num(e.means["latency_p50_us"]), 6),
    ]


def output_width() -> int | None:
    """Columns the table may use: ``$COLUMNS``, else the terminal's, else None (no limit).

    Output to a file or a pipe is not cut (None) unless ``COLUMNS`` says otherwise.
    """
    import os
    import shutil
    import sys

    if os.environ.get("COLUMNS", "").strip().isdigit():
        return max(20, int(os.environ["COLUMNS"]))
    try:
        if sys.stdout.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):
        pass
    return None


def fit_table(entries: list[Entry], columns: list[Column], width: int | None,
              drop: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
    """Rows of a table whose lines fit ``width`` (None: all columns), and the dropped headings.

    Column widths follow their contents; failed entries span the row with ``FAILED: ...``.
    The headings in ``drop`` leave first; then columns leave by ``drop_rank`` (highest first)
    until the widest line fits.
    """
    ok = [e for e in entries if e.error is None]
    cells = {c.heading: [c.cell(e) for e in ok] for c in columns}
    widths = {c.heading: max([len(c.heading), *map(len, cells[c.heading])]) for c in columns}
    ranks = sorted({c.drop_rank for c in columns if c.drop_rank > 0}, reverse=True)
    dropped: set[str] = set(drop)

    def shown() -> list[Column]:
        return [c for c in columns if c.heading not in dropped
                and (not c.only_if_dropped or all(h in dropped for h in c.only_if_dropped))]

    def line_width() -> int:
        return sum(widths[c.heading] for c in shown()) + 2 * (len(shown()) - 1)

    while width is not None and line_width() > width and ranks:
        rank = ranks.pop(0)
        dropped |= {c.heading for c in columns if c.drop_rank == rank and not c.only_if_dropped}
    visible = shown()

    def fmt(values: list[str]) -> str:
        return "  ".join(v.ljust(widths[c.heading]) if c.left else v.rjust(widths[c.heading])
                         for c, v in zip(visible, values, strict=True)).rstrip()

    lines = [fmt([c.heading for c in visible])]
    index = 0
    for e in entries:
        if e.error is not None:
            lines.append(f"{e.approach:<{widths[visible[0].heading]}}  FAILED: {e.error}")
            continue
        lines.append(fmt([cells[c.heading][index] for c in visible]))
        index += 1
    return lines, [c.heading for c in columns if c.heading in dropped]


def comparison_table(comparison: Comparison, width: int | None = None) -> str:
    """The main table: one block per guest workload, one row per approach.

    ``width`` (characters; None: no limit) drops the least essential columns until the lines
    fit: first p50 and MB/s, then notifications and interrupts, then the CPU split (replaced by
    its total), exits, p99. A line under the blocks names what was left out.
    """
    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in comparison.entries:
        groups.setdefault((e.guest, e.workload), []).append(e)
    out: list[str] = []
    columns = _comparison_columns()
    # Every block shows the same columns: those that fit the narrowest block's needs.
    hidden: set[str] = set()
    for rows in groups.values():
        hidden |= set(fit_table(rows, columns, width)[1])
    for (guest, workload), rows in groups.items():
        lines, _ = fit_table(rows, columns, width, frozenset(hidden))
        out += [f"== {guest}.{workload} ({rows[0].kind}) ==", *lines, ""]
    notes = ["req/s and mean µs: replication mean ± 95 % CI half-width; cpu: CPU µs per "
             "request; exits, notif, irqs: per request."]
    if hidden:
        names = [c.heading for c in columns if c.heading in hidden]
        notes.append(f"(narrow terminal: {', '.join(names)} not shown; widen it, set COLUMNS, "
                     f"or use --json)")
    for note in notes:
        out += textwrap.wrap(note, width) if width else [note]
    return "\n".join(out)


def scheduling_table(comparison: Comparison) -> str | None:
    """CPU each guest's scheduling group got over the window, or None under the FIFO pool.

    One row per approach and guest: CPU time in % of one core (replication mean ± CI) and,
    for CFS groups with a quota, bandwidth periods and the periods in which it was throttled.
    """
    rows = []
    seen: set[tuple[str, str]] = set()
    for e in comparison.entries:
        if e.error is not None or (e.approach, e.guest) in seen:
            continue
        if math.isnan(e.means.get("guest_cpu_pct", float("nan"))):
            continue
        seen.add((e.approach, e.guest))
        rows.append(e)
    if not rows:
        return None
    out = ["CPU scheduling over the measurement window (per guest's scheduling group):",
           f"{'approach':<12} {'guest':<12} {'CPU % of a core':>16} {'nr_periods':>11} "
           f"{'nr_throttled':>13}"]
    for e in rows:
        m = e.means
        out.append(f"{e.approach:<12} {e.guest:<12} {_pm(e, 'guest_cpu_pct', 2):>16} "
                   f"{_num(m['nr_periods'], 1):>11} {_num(m['nr_throttled'], 1):>13}")
    return "\n".join(out)


def breakdown_table(comparison: Comparison, width: int | None = None) -> str:
    """Where each request's time went, and why it exited: two tables per guest workload.

    The latency phases (``records.PHASES``) are replication means in µs and add up to the mean
    latency; paths that do not split latency into phases show ``-``. The exit table counts
    exits per request by reason, with the CPU time those exits cost per request. ``width``
    fits each table as :func:`comparison_table` does (the last phases leave first; the exit
    table drops its µs columns, then 'user').
    """
    from virtlab.records import PHASES
    from virtlab.stats import REPORTED_EXIT_REASONS

    short = {"guest": "guest", "exits": "exits", "virt_compute": "virt.cpu",
             "device_model": "dev.model",
             "copies": "copies", "host_kernel": "host", "device": "device",
             "interrupt": "irq", "queueing": "queue", "outside": "outside"}

    def metric(name: str, digits: int) -> Callable[[Entry], str]:
        return lambda e: _num(e.means[name], digits)

    phases = [Column("approach", lambda e: e.approach, 0, left=True),
              Column("mean µs", metric("latency_mean_us", 1), 0)]
    phases += [Column(short[p], metric(f"lat_{p}_us", 1), 1 + i) for i, p in enumerate(PHASES)]
    exits = [Column("approach", lambda e: e.approach, 0, left=True)]
    exits += [Column(r, metric(f"exits_{r}_per_request", 2), 0) for r in REPORTED_EXIT_REASONS]
    exits += [Column("user", metric("exits_user_per_request", 2), 1)]
    exits += [Column(f"{r} µs", metric(f"exit_{r}_us", 2), 2) for r in REPORTED_EXIT_REASONS]
    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in comparison.entries:
        groups.setdefault((e.guest, e.workload), []).append(e)
    intro = ("Where did the time go? Latency split into phases (µs per request, they add up to "
             "the mean; 'exits': the I/O path's VM exits; 'virt.cpu': what virtualization adds "
             "to the application's own CPU work and system calls), and VM exits per request by "
             "reason ('user': reached a user-space device model; 'µs': their CPU time per "
             "request).")
    out = textwrap.wrap(intro, width or 100)
    hidden: set[str] = set()
    for (guest, workload), rows in groups.items():
        out.append(f"== {guest}.{workload} ({rows[0].kind}) ==")
        for columns in (phases, exits):
            lines, dropped = fit_table(rows, columns, width)
            hidden |= set(dropped)
            out += lines
        out.append("")
    if hidden:
        note = (f"(narrow terminal: {', '.join(sorted(hidden))} not shown; widen it, set "
                f"COLUMNS, or use --json)")
        out += textwrap.wrap(note, width) if width else [note]
    return "\n".join(out)


def request_breakdown(record: Any) -> list[str]:
    """Lines describing one request's latency phases and exits by reason (for traces)."""
    from virtlab.records import PHASES
    from virtlab.stats import REPORTED_EXIT_REASONS

    lines = []
    phases = [(p, getattr(record, f"lat_{p}_us")) for p in PHASES]
    if not any(math.isnan(v) for _, v in phases):
        # Phases that round to 0.000 µs (rounding residue of the split) are left out.
        parts = ", ".join(f"{p} {v:.3f}" for p, v in phases if abs(v) >= 5e-4)
        lines.append(f"  where the {record.latency_us:.3f} µs went: {parts} µs")
    exits = ", ".join(f"{r} {getattr(record, f'exits_{r}')} ({getattr(record, f'exit_{r}_us'):.3f}"
                      f" µs)" for r in REPORTED_EXIT_REASONS if getattr(record, f"exits_{r}"))
    if exits:
        lines.append(f"  exits by reason: {exits}; {record.exits_user} reached user space")
    return lines


def ring_table(comparison: Comparison) -> str:
    """Paravirtual rings per guest workload: notifications, occupancy and batch sizes.

    Empty when no entry has rings. ``kicks`` and ``irqs`` are per request; ``occupancy`` is the
    time-weighted mean backlog summed over the guest's rings; ``batch`` is the mean number of
    entries a backend run or a guest poll took at once.
    """
    rows = [e for e in comparison.entries
            if e.error is None and not math.isnan(e.means.get("ring_occupancy_mean", math.nan))]
    if not rows:
        return ""
    out = ["Paravirtual rings (per request: notifications = kicks or event-channel sends, "
           "interrupts; ring backlog and batch sizes):",
           f"{'guest.workload':<20} {'approach':<12} {'kicks':>6} {'irqs':>6} "
           f"{'occupancy':>10} {'batch':>6}"]
    for e in rows:
        m = e.means
        out.append(f"{e.guest + '.' + e.workload:<20} {e.approach:<12} "
                   f"{_num(m['notifications_per_request'], 2):>6} "
                   f"{_num(m['interrupts_per_request'], 2):>6} "
                   f"{_num(m['ring_occupancy_mean'], 2):>10} {_num(m['ring_batch_mean'], 2):>6}")
    return "\n".join(out)


def disk_limits_table(comparison: Comparison, width: int | None = None) -> str:
    """Which of the host disk's limits binds, per approach running a block workload.

    Fractions busy over the run (replication means) of the busiest hardware queue, the
    channels (internal parallelism) and the interface; the largest binds if it reaches
    ``BINDING_UTILISATION``, else the device is not the bottleneck ("latency": too few I/Os in
    flight). Empty when no block workload ran. The heading is wrapped to ``width`` columns
    when given.
    """
    from virtlab.devices import BINDING_UTILISATION, binding_limit

    rows = [e for e in comparison.entries if e.error is None and e.kind == "block"
            and not math.isnan(e.means.get("disk_parallelism_util", math.nan))]
    if not rows:
        return ""
    heading = (f"Disk limits (fraction busy over the run; the largest binds from "
               f"{BINDING_UTILISATION:.0%}, else the I/Os in flight do: 'latency'):")
    out = textwrap.wrap(heading, width) if width else [heading]
    out.append(f"{'guest.workload':<20} {'approach':<12} {'queue':>6} {'parallel':>8} "
               f"{'iface':>6}  binds")
    for e in rows:
        m = e.means
        limits = {"queue": m["disk_queue_util"], "parallelism": m["disk_parallelism_util"],
                  "interface": m["disk_interface_util"]}
        out.append(f"{e.guest + '.' + e.workload:<20} {e.approach:<12} "
                   f"{limits['queue']:>6.2f} {limits['parallelism']:>8.2f} "
                   f"{limits['interface']:>6.2f}  {binding_limit(limits)}")
    return "\n".join(out)


def ring_summary(path_stats: dict[str, dict[str, Any]]) -> list[str]:
    """Lines describing each guest's rings and notification counters (for traces)."""
    lines = []
    for guest, stats in path_stats.items():
        mode = "event index" if stats.get("event_idx") else "flag hints"
        lines.append(f"rings of {guest} (backend {stats.get('backend')}, {mode}):")
        for name, ring in stats.get("rings", {}).items():
            if not ring["batches"] and not ring["max_occupancy"]:
                continue
            lines.append(f"  {name}: backlog max {ring['max_occupancy']} of {ring['size']}, "
                         f"mean {ring['mean_occupancy']:.2f}; {ring['batches']} batches, "
                         f"sizes {ring['batch_sizes']}")
        groups: dict[str, list[str]] = {}
        for key, value in stats.get("counters", {}).items():
            if value:
                prefix, _, counter = key.rpartition(".")
                groups.setdefault(prefix or guest, []).append(f"{counter.replace('_', ' ')} "
                                                              f"{value:g}")
        for prefix, items in groups.items():
            lines.append(f"  {prefix}: {', '.join(items)}")
    return lines


# Provenance ------------------------------------------------------------------------------------
#: Changed parameters named on the provenance line at most (--echo-params lists all).
MAX_CHANGES_SHOWN = 8


def scenario_hash(scenario: Scenario) -> str:
    """A short fingerprint of every effective parameter (12 hex digits of a SHA-256).

    Two scenarios with the same hash have the same ``to_dict()``; with the same seed and
    replications they give the same numbers.
    """
    import hashlib
    import json

    text = json.dumps(scenario.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def toml_value(value: Any) -> str:
    """``value`` as one TOML value, as ``--set KEY=VALUE`` reads it back."""
    import tomli_w

    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def changed_parameters(scenario: Scenario, base: Scenario) -> list[tuple[str, Any]]:
    """The leaf parameters of ``scenario`` that differ from ``base`` (paths as --set spells them).

    The ``profile`` label itself is left out (the provenance line names it).
    """
    before = dict(_flatten("", base.to_dict()))
    return [(name, value) for name, value in _flatten("", scenario.to_dict())
            if name != "profile" and (name not in before or before[name] != value)]


def provenance_line(scenario: Scenario, base: Scenario, *, seed: int, replications: int,
                    config: str | None = None) -> str:
    """One line saying how to get these numbers again.

    ``seed S · R replications · profile P [· config FILE] · changed: k=v ... · scenario HASH``
    where ``changed`` lists what differs from ``base`` (the profile, with the scenario file if
    one was given) as ``--set`` assignments: passing them back with the same seed, replications,
    profile and file reproduces the run, and the hash says so.
    """
    changes = changed_parameters(scenario, base)
    parts = [f"seed {seed}", f"{replications} replication{'s' if replications != 1 else ''}",
             f"profile {scenario.profile}"]
    if config is not None:
        parts.append(f"config {config}")
    if changes:
        shown = " ".join(f"{name}={toml_value(value)}"
                         for name, value in changes[:MAX_CHANGES_SHOWN])
        more = len(changes) - MAX_CHANGES_SHOWN
        parts.append(f"changed: {shown}" + (f" (+{more} more: --echo-params)" if more > 0
                                            else ""))
    else:
        parts.append("changed: nothing")
    parts.append(f"scenario {scenario_hash(scenario)}")
    return " · ".join(parts)
