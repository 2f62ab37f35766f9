"""Plain-text reports for the terminal: the echoed parameters and the comparison table."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from virtlab.config import Scenario
from virtlab.experiment import Comparison, Entry

__all__ = ["effective_parameters", "comparison_table"]


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


def comparison_table(comparison: Comparison) -> str:
    """The main table: one block per guest workload, one row per approach."""
    entries = comparison.entries
    keys: list[tuple[str, str]] = []
    for e in entries:
        if (e.guest, e.workload) not in keys:
            keys.append((e.guest, e.workload))
    header = (f"{'approach':<12} {'req/s':>16} {'MB/s':>9} {'mean µs':>14} {'p50 µs':>9} "
              f"{'p99 µs':>9} | {'cpu µs/req: guest':>17} {'exit':>6} {'backend':>7} "
              f"{'host':>6} | {'exits':>6} {'notif':>6} {'irqs':>6}")
    out = []
    for guest, workload in keys:
        rows = [e for e in entries if (e.guest, e.workload) == (guest, workload)]
        out.append(f"== {guest}.{workload} ({rows[0].kind}) ==")
        out.append(header)
        for e in rows:
            if e.error is not None:
                out.append(f"{e.approach:<12} FAILED: {e.error}")
                continue
            m = e.means
            out.append(
                f"{e.approach:<12} {_pm(e, 'throughput_per_s', 0):>16} "
                f"{_num(m['throughput_bytes_per_s'] / 1e6, 1):>9} "
                f"{_pm(e, 'latency_mean_us', 1):>14} {_num(m['latency_p50_us']):>9} "
                f"{_num(m['latency_p99_us']):>9} | {_num(m['cpu_guest_us'], 2):>17} "
                f"{_num(m['cpu_exit_us'], 2):>6} {_num(m['cpu_backend_us'], 2):>7} "
                f"{_num(m['cpu_host_kernel_us'], 2):>6} | {_num(m['exits_per_request'], 2):>6} "
                f"{_num(m['notifications_per_request'], 2):>6} "
                f"{_num(m['interrupts_per_request'], 2):>6}")
        out.append("")
    return "\n".join(out)
