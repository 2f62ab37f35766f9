"""Experiments: replications with confidence intervals, and comparisons of approaches.

Replication ``r`` of every approach uses the same random streams (common random numbers), so
differences between approaches are not blurred by different arrivals. Runs execute in parallel
processes (one per CPU by default) or on a Dask cluster; results do not depend on how many
(each run is a pure function of ``(scenario, seed, replication)``). A run that fails is
reported as an error entry and the other points are kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from virtlab.config import Scenario
from virtlab.paths import APPROACHES
from virtlab.records import PHASES
from virtlab.stats import METRICS, REPORTED_EXIT_REASONS, WorkloadSummary, mean_ci

__all__ = ["Result", "Comparison", "replicate", "compare", "Entry"]


@dataclass(frozen=True)
class Entry:
    """One workload of one guest under one approach, over all replications.

    ``means[m]`` and ``half_widths[m]`` give the replication mean of metric ``m`` and its
    t-CI half-width at ``confidence`` (NaN with one replication). ``error`` is set, and the
    metrics are empty, when the run failed.
    """

    guest: str
    workload: str
    approach: str
    kind: str
    replications: int
    confidence: float
    means: dict[str, float] = field(default_factory=dict)
    half_widths: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The documented JSON form (docs/results.md)."""
        if self.error is not None:
            return {"guest": self.guest, "workload": self.workload, "approach": self.approach,
                    "kind": self.kind, "error": self.error}
        m = self.means
        return {
            "guest": self.guest, "workload": self.workload, "approach": self.approach,
            "kind": self.kind, "replications": self.replications,
            "requests_per_replication": m["requests"],
            "throughput_per_s": m["throughput_per_s"],
            "throughput_bytes_per_s": m["throughput_bytes_per_s"],
            "latency_us": {"mean": m["latency_mean_us"], "p50": m["latency_p50_us"],
                           "p95": m["latency_p95_us"], "p99": m["latency_p99_us"]},
            "cpu_us_per_request": {"guest": m["cpu_guest_us"], "exit": m["cpu_exit_us"],
                                   "backend": m["cpu_backend_us"],
                                   "host_kernel": m["cpu_host_kernel_us"],
                                   "total": m["cpu_total_us"]},
            "exits_per_request": m["exits_per_request"],
            "notifications_per_request": m["notifications_per_request"],
            "interrupts_per_request": m["interrupts_per_request"],
            "cpu_share": m["cpu_share"],
            "exits_by_reason": {
                reason: {"per_request": _none_if_nan(m[f"exits_{reason}_per_request"]),
                         "cpu_us_per_request": _none_if_nan(m[f"exit_{reason}_us"])}
                for reason in REPORTED_EXIT_REASONS},
            "exits_user_per_request": _none_if_nan(m["exits_user_per_request"]),
            "latency_breakdown_us": {phase: _none_if_nan(m[f"lat_{phase}_us"])
                                     for phase in PHASES},
            "rings": {"occupancy_mean": _none_if_nan(m["ring_occupancy_mean"]),
                      "batch_mean": _none_if_nan(m["ring_batch_mean"])},
            "disk": _disk_limits(m),
            "scheduling": {key: _none_if_nan(m[key])
                           for key in ("guest_cpu_pct", "nr_periods", "nr_throttled")},
            "ci_half_width": {k: _none_if_nan(v) for k, v in self.half_widths.items()},
        }


def json_safe(value: Any) -> Any:
    """Replace NaN and infinities (no request in the window, one replication) by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps_json(document: Any) -> str:
    """Strict JSON text (no NaN literals) of a results document."""
    return json.dumps(json_safe(document), indent=2, allow_nan=False, default=str)


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def _disk_limits(means: dict[str, float]) -> dict[str, Any] | None:
    """The host disk's limits for a block workload (None for other workloads)."""
    from virtlab.devices import binding_limit

    limits = {"queue": means["disk_queue_util"], "parallelism": means["disk_parallelism_util"],
              "interface": means["disk_interface_util"]}
    if any(math.isnan(v) for v in limits.values()):
        return None
    return {**{f"{name}_util": value for name, value in limits.items()},
            "binds": binding_limit(limits)}


def _entries(scenario: Scenario, approach: str, summaries: Sequence[Sequence[WorkloadSummary]],
             confidence: float) -> list[Entry]:
    entries = []
    for position, first in enumerate(summaries[0]):
        per_rep = [reps[position] for reps in summaries]
        means, halves = {}, {}
        for metric in METRICS:
            mean, half = mean_ci([getattr(s, metric) for s in per_rep], confidence)
            means[metric] = mean
            halves[metric] = half
        entries.append(Entry(first.guest, first.workload, approach, first.kind,
                             len(per_rep), confidence, means, halves))
    return entries


def collect(tasks: list[tuple[Scenario, int, int]], *, jobs: int | None = None,
            scheduler: str | None = None, store: Any = None,
            progress: Any = None) -> list[list[WorkloadSummary] | str]:
    """Outcomes of ``tasks`` in task order: summaries, or the error text of a failed run.

    Runs execute on :func:`virtlab.executors.make_engine` (a process pool of up to ``jobs``
    workers, default one per CPU; or a Dask cluster at ``scheduler``); the order of
    completion does not matter.
    """
    from virtlab.executors import Runner, Task, make_engine

    engine = make_engine(jobs, scheduler, len(tasks))
    outcomes: list[Any] = [None] * len(tasks)
    with Runner(engine, store, progress) as runner:
        items = ((index, Task(*task)) for index, task in enumerate(tasks))
        for tag, outcome in runner.map(items):
            outcomes[int(tag)] = outcome.error or list(outcome.summaries)
    return outcomes


@dataclass(frozen=True)
class Result:
    """Replications of one scenario: entries per guest workload, with provenance."""

    scenario: Scenario
    seed: int
    replications: int
    confidence: float
    entries: list[Entry]

    def to_json_dict(self) -> dict[str, Any]:
        """One JSON document: scenario, seed and one entry per guest workload."""
        from virtlab import __version__

        return {"virtlab_version": __version__, "seed": self.seed,
                "replications": self.replications, "confidence": self.confidence,
                "scenario": self.scenario.to_dict(),
                "entries": [e.to_json_dict() for e in self.entries]}

    def to_json(self) -> str:
        """:meth:`to_json_dict` as text."""
        return dumps_json(self.to_json_dict())

    def to_frame(self):  # -> pandas.DataFrame
        """One row per entry: identifiers, metric means and ``<metric>_ci`` half-widths."""
        import pandas as pd

        rows = []
        for e in self.entries:
            row: dict[str, Any] = {"guest": e.guest, "workload": e.workload,
                                   "approach": e.approach, "kind": e.kind, "error": e.error}
            row.update(e.means)
            row.update({f"{k}_ci": v for k, v in e.half_widths.items()})
            rows.append(row)
        return pd.DataFrame(rows)


def replicate(scenario: Scenario, seed: int = 0, replications: int = 3, *,
              confidence: float = 0.95, jobs: int | None = None,
              scheduler: str | None = None) -> Result:
    """Run ``replications`` independent replications and summarise them with t-CIs."""
    return compare(scenario, approaches=None, seed=seed, replications=replications,
                   confidence=confidence, jobs=jobs, scheduler=scheduler).results[0]


@dataclass(frozen=True)
class Comparison:
    """Results of the same scenario under several approaches (common random numbers)."""

    results: list[Result]

    @property
    def entries(self) -> list[Entry]:
        """All entries, approach by approach."""
        return [e for r in self.results for e in r.entries]

    def to_frame(self):  # -> pandas.DataFrame
        """All entries as one DataFrame."""
        import pandas as pd

        return pd.concat([r.to_frame() for r in self.results], ignore_index=True)

    def to_json_dict(self) -> dict[str, Any]:
        """One JSON document with one entry per approach and guest workload."""
        from virtlab import __version__

        first = self.results[0]
        return {"virtlab_version": __version__, "seed": first.seed,
                "replications": first.replications, "confidence": first.confidence,
                "scenario": first.scenario.to_dict(),
                "approaches": [r.entries[0].approach for r in self.results],
                "entries": [e.to_json_dict() for e in self.entries]}

    def to_json(self) -> str:
        """:meth:`to_json_dict` as text."""
        return dumps_json(self.to_json_dict())

    def entry(self, approach: str, guest: str, workload: str | None = None) -> Entry:
        """Look one entry up."""
        for e in self.entries:
            if e.approach == approach and e.guest == guest and (
                    workload is None or e.workload == workload):
                return e
        raise KeyError((approach, guest, workload))


def compare(scenario: Scenario, approaches: Iterable[str] | None = APPROACHES, *,
            seed: int = 0, replications: int = 3, confidence: float = 0.95,
            jobs: int | None = None, scheduler: str | None = None, store: Any = None,
            progress: Any = None) -> Comparison:
    """Run ``scenario`` with every guest switched to each approach in turn.

    ``approaches=None`` keeps the scenario's own approaches (one result). The runs (approaches
    × replications) execute in parallel, see :func:`collect`; results do not depend on how.
    """
    variants = ([scenario] if approaches is None
                else [scenario.with_approach(a) for a in approaches])
    tasks = [(variant, seed, r) for variant in variants for r in range(replications)]
    outcomes = collect(tasks, jobs=jobs, scheduler=scheduler, store=store, progress=progress)
    return Comparison([result_of(variant, seed, confidence,
                                 outcomes[index * replications:(index + 1) * replications])
                       for index, variant in enumerate(variants)])


def result_of(variant: Scenario, seed: int, confidence: float,
              chunk: Sequence[list[WorkloadSummary] | str]) -> Result:
    """The :class:`Result` of one scenario from its replications' outcomes (in order).

    A failed replication turns every entry into an error entry naming the first error.
    """
    replications = len(chunk)
    errors = [c for c in chunk if isinstance(c, str)]
    summaries = [c for c in chunk if not isinstance(c, str)]
    if errors:
        entries = [Entry(g.name, w.name, g.approach, w.kind, replications, confidence,
                         error=errors[0])
                   for g in variant.guests for w in g.workloads]
    else:
        entries = _entries(variant, variant.guests[0].approach, summaries, confidence)
        entries = [e if e.approach == g_app else Entry(**{**asdict(e), "approach": g_app})
                   for e, g_app in zip(entries, _approach_per_entry(variant), strict=True)]
    return Result(variant, seed, replications, confidence, entries)


def _approach_per_entry(scenario: Scenario) -> list[str]:
    return [g.approach for g in scenario.guests for _ in g.workloads]
