"""Figures of sweep and capacity results (matplotlib, PNG/SVG/PDF).

Input is what ``virtlab sweep|capacity --csv/--parquet`` writes (or ``to_frame()``): the
``study`` column says which. Every figure has a title, axis labels with units, a legend, and
error bars from the confidence-interval half-widths (none with one replication, which the
title then says).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from virtlab.errors import ConfigError

__all__ = ["plot_file", "plot_sweep", "plot_capacity", "read_result", "metric_label"]

_FORMATS = (".png", ".svg", ".pdf")

# Labels and units of the metrics (docs/results.md).
_METRIC_LABELS = {
    "throughput_per_s": ("throughput", "requests/s"),
    "throughput_bytes_per_s": ("throughput", "bytes/s"),
    "latency_mean_us": ("mean latency", "µs"),
    "latency_p50_us": ("median latency", "µs"),
    "latency_p95_us": ("p95 latency", "µs"),
    "latency_p99_us": ("p99 latency", "µs"),
    "cpu_total_us": ("host CPU time per request", "µs"),
    "cpu_guest_us": ("guest CPU time per request", "µs"),
    "cpu_exit_us": ("VM-exit CPU time per request", "µs"),
    "cpu_backend_us": ("backend CPU time per request", "µs"),
    "cpu_host_kernel_us": ("host-kernel CPU time per request", "µs"),
    "exits_per_request": ("VM exits per request", "1/request"),
    "notifications_per_request": ("notifications per request", "1/request"),
    "interrupts_per_request": ("interrupts per request", "1/request"),
    "cpu_share": ("share of host CPU", "fraction"),
    "requests": ("requests in the window", "requests"),
}


def metric_label(metric: str) -> str:
    """``"p99 latency (µs)"`` for ``latency_p99_us``; a readable guess for other metrics."""
    name, unit = _METRIC_LABELS.get(metric, (metric.replace("_", " "), _unit_of(metric)))
    return f"{name} ({unit})" if unit else name


def _unit_of(name: str) -> str:
    for suffix, unit in (("_us", "µs"), ("_per_s", "1/s"), ("_per_request", "1/request"),
                         ("_pct", "%"), ("_bytes", "bytes")):
        if name.endswith(suffix):
            return unit
    return ""


def _key_label(key: str) -> str:
    """The varied key with its unit from the parameter tables, when one is found."""
    unit = _param_unit(key)
    return f"{key} ({unit})" if unit else key


def _param_unit(key: str) -> str:
    """Unit of a dotted scenario key, looked up in the parameters' metadata ('' if unknown)."""
    import dataclasses
    import re

    from virtlab.cli import _param_tables

    field_name = re.findall(r"[^.\[\]]+", key)[-1] if key else ""
    for _title, cls in _param_tables():
        for fld in dataclasses.fields(cls):
            if fld.name == field_name:
                info = fld.metadata.get("param") if fld.metadata else None
                unit = getattr(info, "unit", "") if info is not None else ""
                if unit:
                    return str(unit)
    return _unit_of(field_name)


def read_result(path: str | Path) -> Any:
    """A result file as a DataFrame (CSV or Parquet, by extension)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ConfigError("RESULT_FILE", f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            raise ConfigError("RESULT_FILE", f"{path}: must end in .csv or .parquet")
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is one line
        raise ConfigError("RESULT_FILE", f"{path}: cannot read ({type(err).__name__}: "
                                         f"{err})") from err
    if "study" not in frame.columns or frame.empty:
        raise ConfigError("RESULT_FILE", f"{path}: not a virtlab sweep or capacity result "
                                         "(no 'study' column, or no rows)")
    return frame


def plot_file(result: str | Path, output: str | Path, *, metric: str | None = None,
              x: str | None = None) -> Path:
    """Draw ``result`` (a sweep or capacity file) into ``output``; return its path."""
    output = Path(output)
    if output.suffix not in _FORMATS:
        raise ConfigError("--output", f"{output}: must end in {', '.join(_FORMATS)}")
    if not output.resolve().parent.is_dir():
        raise ConfigError("--output", f"{output}: directory {output.resolve().parent} does "
                                      "not exist")
    frame = read_result(result)
    study = str(frame["study"].iloc[0])
    if study == "sweep":
        figure = plot_sweep(frame, metric=metric or "latency_p99_us", x=x)
    elif study == "capacity":
        if metric not in (None, "worst_p99_us"):
            raise ConfigError("--metric", "a capacity result draws worst_p99_us only")
        figure = plot_capacity(frame)
    else:
        raise ConfigError("RESULT_FILE", f"{result}: a {study!r} result; plot draws sweep "
                                         "and capacity results")
    figure.savefig(output, dpi=150, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return output


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _no_ci(errors: list[float]) -> bool:
    return all(e is None or (isinstance(e, float) and math.isnan(e)) for e in errors)


def plot_sweep(frame: Any, metric: str = "latency_p99_us", x: str | None = None) -> Any:
    """A metric against one varied key; one line per approach, workload and other factors."""
    import pandas as pd

    plt = _pyplot()
    factors = [c[len("vary:"):] for c in frame.columns if str(c).startswith("vary:")]
    if not factors:
        raise ConfigError("RESULT_FILE", "a sweep result without vary: columns")
    x = x or factors[0]
    if x not in factors:
        raise ConfigError("--x", f"must be one of {', '.join(factors)}, got {x!r}")
    if metric not in frame.columns:
        known = [c for c in frame.columns if f"{c}_ci" in frame.columns]
        raise ConfigError("--metric", f"must be one of {', '.join(known)}, got {metric!r}")
    good = frame[frame["error"].isna()] if "error" in frame.columns else frame
    if good.empty:
        raise ConfigError("RESULT_FILE", "every point of this sweep failed: nothing to draw")
    others = [f"vary:{f}" for f in factors if f != x]
    column = f"vary:{x}"
    numeric = pd.api.types.is_numeric_dtype(good[column])
    categories = list(dict.fromkeys(good[column])) if not numeric else []
    figure, axes = plt.subplots(figsize=(7, 4.2))
    group_keys = ["approach", "guest", "workload", *others]
    errors_all: list[float] = []
    for keys, rows in good.groupby(group_keys, sort=False, dropna=False):
        rows = rows.sort_values(column) if numeric else rows
        xs = list(rows[column]) if numeric else [categories.index(v) for v in rows[column]]
        ci = list(rows[f"{metric}_ci"]) if f"{metric}_ci" in rows.columns else []
        errors_all += ci
        label = " ".join(str(k) for k in keys[:1]) + f" {keys[1]}.{keys[2]}" + "".join(
            f", {name[len('vary:'):].split('.')[-1]}={value}"
            for name, value in zip(others, keys[3:], strict=True))
        axes.errorbar(xs, list(rows[metric]), yerr=None if _no_ci(ci) else ci, marker="o",
                      capsize=3, label=label)
    if not numeric:
        axes.set_xticks(range(len(categories)), [str(c) for c in categories])
    axes.set_xlabel(_key_label(x))
    axes.set_ylabel(metric_label(metric))
    note = "" if not _no_ci(errors_all) else " (one replication: no CI)"
    axes.set_title(f"{metric_label(metric).split(' (')[0]} vs {x.split('.')[-1]}{note}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", title="approach guest.workload")
    return figure


def plot_capacity(frame: Any) -> Any:
    """Worst guest's p99 against the guest count, per approach, with the limit."""
    from matplotlib.ticker import MaxNLocator

    from virtlab.capacity import RESOURCE_LABELS

    plt = _pyplot()
    good = frame[frame["error"].isna()] if "error" in frame.columns else frame
    if good.empty:
        raise ConfigError("RESULT_FILE", "every point of this capacity study failed")
    figure, axes = plt.subplots(figsize=(7, 4.2))
    finite_max = 0.0
    for approach, rows in good.groupby("approach", sort=False):
        rows = rows.sort_values("guests")
        ys = [min(v, 1e300) for v in rows["worst_p99_us"]]
        finite = [v for v in rows["worst_p99_us"] if math.isfinite(v)]
        finite_max = max([finite_max, *finite])
        ci = list(rows["worst_p99_us_ci"])
        answer = int(rows["answer_guests"].iloc[0])
        bounded = bool(rows["answer_bounded"].iloc[0])
        limit_rows = rows[rows["guests"] > answer] if bounded else rows.tail(1)
        neck = ""
        if len(limit_rows):
            first = limit_rows.iloc[0]
            name = RESOURCE_LABELS.get(first["bottleneck"], first["bottleneck"])
            neck = (f"; {name} at {first['bottleneck_utilisation']:.0%} with "
                    f"{first['guests']} guests")
        fits = f"{answer}" if bounded else f">= {answer}"
        axes.errorbar(list(rows["guests"]), ys, yerr=None if _no_ci(ci) else ci, marker="o",
                      capsize=3, label=f"{approach}: {fits} fit{neck}")
    limit = float(frame["p99_limit_us"].iloc[0])
    axes.axhline(limit, color="k", linestyle="--", linewidth=1,
                 label=f"p99 limit {limit:g} µs")
    axes.set_yscale("log")
    top = max(finite_max, limit) * 3
    axes.set_ylim(top=top)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("guests on the host (copies of the template guest)")
    axes.set_ylabel("worst guest's p99 latency (µs)")
    axes.set_title("Capacity: worst-guest p99 latency vs guests (mean ± CI)")
    axes.grid(True, alpha=0.3, which="both")
    axes.legend(fontsize="small")
    return figure
