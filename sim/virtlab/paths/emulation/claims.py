"""Measuring the seed article's claim: how much throughput emulation loses, by CPU support.

"For network and disk I/O the loss can reach 50 %, depending on how well the processor
supports virtualization" (SA07). :func:`measure_ratios` runs each workload
alone on a guest, natively and emulated, under each CPU support preset, with common random
numbers, and reports the emulated/native throughput ratio per replication with its mean and
confidence interval. The lab's check script and the documentation's table both come from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from virtlab.config import scenario_from_dict
from virtlab.model import run
from virtlab.stats import mean_ci

__all__ = ["WORKLOADS", "RatioRow", "measure_ratios", "format_ratios"]

#: The three workloads of the claim: small network requests, small disk reads, a bulk stream.
WORKLOADS: dict[str, dict[str, Any]] = {
    "small net (TCP_RR 100/200 B, 4 in flight)": {"kind": "rr", "in_flight": 4},
    "small disk (4 KiB random reads, QD 32)": {"kind": "block"},
    "bulk (TCP stream, 64 KiB segments)": {"kind": "stream"},
}


@dataclass(frozen=True)
class RatioRow:
    """Emulated vs native throughput of one workload under one preset."""

    preset: str
    workload: str
    native_per_s: float
    emulated_per_s: float
    ratio: float
    ratio_half_width: float
    exits_per_request: float


def measure_ratios(presets: Iterable[str], *, profile: str = "modern",
                   workloads: Mapping[str, Mapping[str, Any]] = WORKLOADS,
                   replications: int = 3, seed: int = 0, confidence: float = 0.95,
                   duration_us: float = 30_000.0, warmup_us: float = 3_000.0,
                   extra: Mapping[str, Mapping[str, Any]] | None = None) -> list[RatioRow]:
    """Run every (preset, workload) natively and emulated; return the throughput ratios.

    Parameters
    ----------
    presets:
        CPU support presets (``virtlab presets``).
    profile:
        Hardware profile the guest runs on.
    workloads:
        Label -> workload table; each runs alone on a 2-vCPU guest.
    replications, seed, confidence:
        Replication ``r`` of native and emulated share random streams; the ratio's interval is
        a t-interval over the per-replication ratios.
    duration_us, warmup_us:
        Measurement window of each run, µs.
    extra:
        Further parameter tables merged into every scenario (e.g. ``{"emulated": {...}}``).

    """
    rows = []
    for preset in presets:
        for label, workload in workloads.items():
            results: dict[str, list[Any]] = {}
            for approach in ("native", "emulated"):
                data: dict[str, Any] = {
                    "duration_us": duration_us, "warmup_us": warmup_us,
                    "hypervisor": {"cpu_support": preset},
                    "guests": [{"name": "g", "approach": approach, "vcpus": 2,
                                "workloads": [dict(workload)]}]}
                for section, table in (extra or {}).items():
                    data.setdefault(section, {}).update(table)
                scenario = scenario_from_dict(data, profile)
                results[approach] = [run(scenario, seed, replication=r).summaries[0]
                                     for r in range(replications)]
            ratios = [e.throughput_per_s / n.throughput_per_s
                      for e, n in zip(results["emulated"], results["native"], strict=True)]
            mean, half = mean_ci(ratios, confidence)
            rows.append(RatioRow(
                preset, label,
                sum(n.throughput_per_s for n in results["native"]) / replications,
                sum(e.throughput_per_s for e in results["emulated"]) / replications,
                mean, half,
                sum(e.exits_per_request for e in results["emulated"]) / replications))
    return rows


def format_ratios(rows: Iterable[RatioRow]) -> str:
    """A Markdown table of the rows (readable in a terminal too)."""
    out = ["| CPU support | workload | native /s | emulated /s | emulated/native | exits/req |",
           "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        half = "" if row.ratio_half_width != row.ratio_half_width else (
            f" ± {row.ratio_half_width:.2f}")
        out.append(f"| {row.preset} | {row.workload} | {row.native_per_s:,.0f} | "
                   f"{row.emulated_per_s:,.0f} | {row.ratio:.2f}{half} | "
                   f"{row.exits_per_request:.1f} |")
    return "\n".join(out)
