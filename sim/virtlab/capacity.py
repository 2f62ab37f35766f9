"""Capacity: how many copies of a guest fit on the host before the worst p99 breaks a limit.

The scenario's first guest is cloned ``n`` times; a guest count *fits* when the worst guest's
p99 latency, averaged over replications, is within the limit.

* :func:`capacity_search` finds the largest fitting count with few points: galloping
  (1, 2, 4, ... up to ``max_guests``) until a count does not fit, then bisection between the
  last count that fits and the first that does not. It assumes that adding a guest never
  makes the worst p99 better (monotone), and answers with the bottleneck resource at the
  limit: the most utilised of host cores, the busiest guest's vCPUs, its backend thread, the
  disk and the NIC (:func:`virtlab.executors.resource_utilisation`).
* :func:`capacity` evaluates the given counts one by one (a linear scan).

At each point, replications are added (``replications`` at first, then doubled, up to
``max_replications``) until the limit lies clearly outside the t confidence interval of the
mean worst p99; a point still inside the interval at the maximum is decided by its mean and
marked ``decided=False``. The searches of all approaches, and the replications of a point, run
in parallel on one engine.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from virtlab.config import Scenario
from virtlab.errors import ConfigError
from virtlab.paths import APPROACHES
from virtlab.stats import mean_ci

__all__ = ["RESOURCE_LABELS", "CapacityRow", "CapacityAnswer", "CapacityResult", "capacity",
           "capacity_search", "with_guest_copies"]

#: Readable names of the resources of :data:`virtlab.executors.RESOURCES`.
RESOURCE_LABELS = {"host_cores": "host cores", "guest_vcpus": "guest vCPUs",
                   "backend": "backend thread", "disk": "disk", "nic_tx": "NIC transmit",
                   "nic_rx": "NIC receive", "unknown": "unknown resource"}

#: Below this many requests in the window, a p99 rests on too little data (warned about).
MIN_REQUESTS_FOR_P99 = 100


def with_guest_copies(scenario: Scenario, count: int, template: int = 0) -> Scenario:
    """``scenario`` with its guests replaced by ``count`` copies of guest ``template``."""
    if count < 1:
        raise ConfigError("guests", f"count must be >= 1, got {count}")
    guest = scenario.guests[template]
    copies = tuple(dataclasses.replace(guest, name=f"{guest.name}{i}") for i in range(count))
    return dataclasses.replace(scenario, guests=copies)


@dataclass(frozen=True)
class CapacityRow:
    """One approach at one guest count: the worst guest's p99 and the total throughput.

    ``worst_p99_us`` is the replication mean of the worst guest's p99 (``inf`` when a guest
    completed no request in the window), ``*_ci`` the t-CI half-widths (NaN with one
    replication). ``decided`` is true when the limit lies outside the CI. ``utilisation``
    holds each resource's mean busy fraction; ``min_requests`` the fewest requests any
    workload completed in a replication's window.
    """

    approach: str
    guests: int
    worst_p99_us: float
    total_throughput_per_s: float
    fits: bool
    error: str | None = None
    replications: int = 1
    worst_p99_ci_us: float = float("nan")
    total_throughput_ci_per_s: float = float("nan")
    decided: bool = False
    min_requests: int = 0
    utilisation: dict[str, float] = field(default_factory=dict)

    @property
    def bottleneck(self) -> tuple[str, float]:
        """The most utilised resource and its utilisation (``("unknown", nan)`` if none)."""
        known = [(value, name) for name, value in self.utilisation.items()
                 if not math.isnan(value)]
        if not known:
            return "unknown", float("nan")
        value, name = max(known, key=lambda item: item[0])
        return name, value


@dataclass(frozen=True)
class CapacityAnswer:
    """How many guests fit under one approach, and what runs out first.

    ``guests`` is the largest count that fits (0: not even one). ``bounded`` is false when the
    largest count tried still fits (the answer is then a lower bound). ``limit_row`` is the
    smallest count found over the limit (or the largest tried, if unbounded); the bottleneck
    is its most utilised resource.
    """

    approach: str
    guests: int
    bounded: bool
    limit_row: CapacityRow | None
    points: int

    @property
    def bottleneck(self) -> tuple[str, float]:
        """The most utilised resource at the limit."""
        return self.limit_row.bottleneck if self.limit_row else ("unknown", float("nan"))


class CapacityResult(Sequence[CapacityRow]):
    """Rows (per approach, by guest count) and the answer per approach."""

    def __init__(self, rows: Iterable[CapacityRow], approaches: Sequence[str],
                 p99_limit_us: float, seed: int, confidence: float, max_guests: int,
                 method: str) -> None:
        order = {a: i for i, a in enumerate(approaches)}
        self.rows = sorted(rows, key=lambda r: (order[r.approach], r.guests))
        self.approaches = list(approaches)
        self.p99_limit_us = p99_limit_us
        self.seed = seed
        self.confidence = confidence
        self.max_guests = max_guests
        self.method = method
        self.answers = {a: self._answer(a) for a in self.approaches}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> Any:
        return self.rows[index]

    def _answer(self, approach: str) -> CapacityAnswer:
        mine = [r for r in self.rows if r.approach == approach]
        fitting = [r.guests for r in mine if r.fits]
        over = [r for r in mine if not r.fits]
        best = max(fitting, default=0)
        above = [r for r in over if r.guests > best]
        if above:
            return CapacityAnswer(approach, best, True, min(above, key=lambda r: r.guests),
                                  len(mine))
        largest = max(mine, key=lambda r: r.guests, default=None)
        return CapacityAnswer(approach, best, False, largest, len(mine))

    @property
    def uncertain(self) -> list[CapacityRow]:
        """Rows decided by their mean because the limit stayed inside the CI."""
        return [r for r in self.rows if not r.decided and not r.error]

    @property
    def thin(self) -> list[CapacityRow]:
        """Rows whose p99 rests on fewer than :data:`MIN_REQUESTS_FOR_P99` requests."""
        return [r for r in self.rows if not r.error and r.min_requests < MIN_REQUESTS_FOR_P99]

    def to_frame(self):  # -> pandas.DataFrame
        """One row per approach × guest count (docs/results.md, "capacity")."""
        import pandas as pd

        from virtlab.executors import RESOURCES

        records = []
        for r in self.rows:
            answer = self.answers[r.approach]
            name, value = r.bottleneck
            records.append({
                "study": "capacity", "method": self.method, "approach": r.approach,
                "guests": r.guests, "replications": r.replications,
                "worst_p99_us": r.worst_p99_us, "worst_p99_us_ci": r.worst_p99_ci_us,
                "p99_limit_us": self.p99_limit_us,
                "total_throughput_per_s": r.total_throughput_per_s,
                "total_throughput_per_s_ci": r.total_throughput_ci_per_s,
                "fits": r.fits, "decided": r.decided, "min_requests": r.min_requests,
                "bottleneck": name, "bottleneck_utilisation": value,
                **{f"util_{k}": r.utilisation.get(k, float("nan")) for k in RESOURCES},
                "answer_guests": answer.guests, "answer_bounded": answer.bounded,
                "error": r.error})
        return pd.DataFrame(records)

    def to_json_dict(self) -> dict[str, Any]:
        """One JSON document: provenance, an answer per approach and every row."""
        from virtlab import __version__

        def row(r: CapacityRow) -> dict[str, Any]:
            return {"guests": r.guests, "replications": r.replications,
                    "worst_p99_us": r.worst_p99_us, "worst_p99_ci_us": r.worst_p99_ci_us,
                    "total_throughput_per_s": r.total_throughput_per_s,
                    "total_throughput_ci_per_s": r.total_throughput_ci_per_s,
                    "fits": r.fits, "decided": r.decided, "min_requests": r.min_requests,
                    "utilisation": r.utilisation, "error": r.error}

        out = []
        for approach in self.approaches:
            answer = self.answers[approach]
            name, value = answer.bottleneck
            out.append({"approach": approach, "guests_fit": answer.guests,
                        "bounded": answer.bounded,
                        "limit_guests": answer.limit_row.guests if answer.limit_row else None,
                        "bottleneck": name, "bottleneck_utilisation": value,
                        "points": answer.points,
                        "rows": [row(r) for r in self.rows if r.approach == approach]})
        return {"virtlab_version": __version__, "seed": self.seed, "method": self.method,
                "p99_limit_us": self.p99_limit_us, "confidence": self.confidence,
                "max_guests": self.max_guests, "approaches": out}


class _Point:
    """The replications of one (approach, guest count) gathered so far, and the verdict."""

    def __init__(self, approach: str, count: int, scenario: Scenario) -> None:
        self.approach = approach
        self.count = count
        self.scenario = scenario
        self.outcomes: dict[int, Any] = {}
        self.requested = 0

    def complete(self) -> bool:
        return len(self.outcomes) == self.requested

    def row(self, limit_us: float, confidence: float) -> CapacityRow:
        reps = [self.outcomes[r] for r in range(self.requested)]
        nan = float("nan")
        errors = [o.error for o in reps if o.error]
        if errors:
            return CapacityRow(self.approach, self.count, nan, nan, False, errors[0],
                               len(reps), decided=True)
        p99s = [max((math.inf if math.isnan(s.latency_p99_us) else s.latency_p99_us)
                    for s in o.summaries) for o in reps]
        tputs = [sum(s.throughput_per_s for s in o.summaries) for o in reps]
        least = min(s.requests for o in reps for s in o.summaries)
        keys = sorted({k for o in reps for k in o.resources})
        utilisation = {k: float(sum(o.resources.get(k, nan) for o in reps) / len(reps))
                       for k in keys}
        tput, tput_half = mean_ci(tputs, confidence)
        if any(math.isinf(p) for p in p99s):  # a guest starved: over any limit
            return CapacityRow(self.approach, self.count, math.inf, tput, False, None,
                               len(reps), nan, tput_half, True, least, utilisation)
        mean, half = mean_ci(p99s, confidence)
        if math.isnan(half):
            decided, fits = False, mean <= limit_us
        else:
            decided = mean + half < limit_us or mean - half > limit_us
            fits = mean <= limit_us
        return CapacityRow(self.approach, self.count, mean, tput, fits, None, len(reps), half,
                           tput_half, decided, least, utilisation)


class _Search:
    """Galloping then bisection over guest counts for one approach.

    Invariant: every count <= ``lo`` fits and every count >= ``hi`` does not (given
    monotonicity); the search ends when ``hi == lo + 1`` or ``lo == max_guests``.
    """

    def __init__(self, max_guests: int) -> None:
        self.max_guests = max_guests
        self.lo = 0
        self.hi: int | None = None

    def next_count(self) -> int | None:
        if self.hi is None:
            if self.lo >= self.max_guests:
                return None
            return 1 if self.lo == 0 else min(2 * self.lo, self.max_guests)
        if self.hi - self.lo <= 1:
            return None
        return (self.lo + self.hi) // 2

    def record(self, count: int, fits: bool) -> None:
        if fits:
            self.lo = max(self.lo, count)
        else:
            self.hi = count if self.hi is None else min(self.hi, count)

    def points_left(self) -> int:
        """An estimate of the counts still to evaluate (for the progress bar)."""
        if self.next_count() is None:
            return 0
        if self.hi is None:
            gallop = math.ceil(math.log2(self.max_guests / max(self.lo, 1))) + 1
            return gallop + math.ceil(math.log2(max(self.lo, 2)))
        return math.ceil(math.log2(self.hi - self.lo))


def _check(p99_limit_us: float, replications: int, max_replications: int) -> None:
    if not p99_limit_us > 0:
        raise ConfigError("p99_limit_us", f"must be positive, got {p99_limit_us}")
    if replications < 1:
        raise ConfigError("replications", f"must be an integer >= 1, got {replications}")
    if max_replications < replications:
        raise ConfigError("max_replications", f"must be >= replications ({replications}), "
                                              f"got {max_replications}")


def _drive(scenario: Scenario, approaches: list[str], counts_of: Any, p99_limit_us: float,
           *, seed: int, replications: int, max_replications: int, confidence: float,
           jobs: int | None, scheduler: str | None, store: Any, progress: Any,
           estimate: Any) -> Iterator[CapacityRow]:
    """Evaluate the counts each approach's chooser asks for; yield rows as they are decided.

    ``counts_of(approach)`` returns an object with ``next_count()`` and ``record(n, fits)``.
    """
    from virtlab.executors import Runner, Task, make_engine

    choosers = {a: counts_of(a) for a in approaches}
    points: dict[tuple[str, int], _Point] = {}
    engine = make_engine(jobs, scheduler, estimate(choosers) * replications or 1)
    with Runner(engine, store, progress) as runner:

        def ask(point: _Point, upto: int) -> None:
            for r in range(point.requested, upto):
                runner.submit((point.approach, point.count, r), Task(point.scenario, seed, r))
            point.requested = upto

        def launch(approach: str) -> None:
            count = choosers[approach].next_count()
            if count is None:
                return
            variant = with_guest_copies(scenario, count).with_approach(approach)
            point = points[approach, count] = _Point(approach, count, variant)
            ask(point, replications)

        for approach in approaches:
            launch(approach)
        while runner.outstanding:
            if progress is not None:
                progress.expect(progress.done + replications * estimate(choosers))
            (approach, count, r), outcome = runner.next_done()
            point = points[approach, count]
            point.outcomes[r] = outcome
            if not point.complete():
                continue
            row = point.row(p99_limit_us, confidence)
            if not row.decided and not row.error and point.requested < max_replications:
                ask(point, min(2 * point.requested, max_replications))
                continue
            choosers[approach].record(count, row.fits)
            yield row
            launch(approach)


def capacity_search(scenario: Scenario, p99_limit_us: float, max_guests: int = 8,
                    approaches: Iterable[str] = APPROACHES, *, seed: int = 0,
                    replications: int = 3, max_replications: int = 12,
                    confidence: float = 0.95, jobs: int | None = None,
                    scheduler: str | None = None, store: Any = None,
                    progress: Any = None) -> CapacityResult:
    """The largest guest count that fits under each approach, found by galloping + bisection."""
    _check(p99_limit_us, replications, max_replications)
    if max_guests < 1:
        raise ConfigError("max_guests", f"must be an integer >= 1, got {max_guests}")
    chosen = list(approaches)

    def estimate(choosers: dict[str, _Search]) -> int:
        return sum(c.points_left() for c in choosers.values())

    rows = _drive(scenario, chosen, lambda _a: _Search(max_guests), p99_limit_us, seed=seed,
                  replications=replications, max_replications=max_replications,
                  confidence=confidence, jobs=jobs, scheduler=scheduler, store=store,
                  progress=progress, estimate=estimate)
    return CapacityResult(list(rows), chosen, p99_limit_us, seed, confidence, max_guests,
                          "search")


class _Scan:
    """Evaluates the given counts in order, all of them (for :func:`capacity`)."""

    def __init__(self, counts: Sequence[int]) -> None:
        self.left = list(counts)

    def next_count(self) -> int | None:
        return self.left.pop(0) if self.left else None

    def record(self, count: int, fits: bool) -> None:
        pass


def capacity(scenario: Scenario, p99_limit_us: float, counts: Sequence[int],
             approaches: Iterable[str] = APPROACHES, *, seed: int = 0,
             replications: int = 1, max_replications: int | None = None,
             confidence: float = 0.95, jobs: int | None = None, scheduler: str | None = None,
             store: Any = None, progress: Any = None) -> CapacityResult:
    """Evaluate every count in ``counts`` per approach (a linear scan).

    With ``max_replications`` above ``replications``, points close to the limit get more
    replications, exactly as in :func:`capacity_search`. The counts of one approach run one
    after another (each point's replications, and the approaches, in parallel).
    """
    max_reps = replications if max_replications is None else max_replications
    _check(p99_limit_us, replications, max_reps)
    for count in counts:
        if count < 1:
            raise ConfigError("counts", f"guest counts must be >= 1, got {count}")
    chosen = list(approaches)

    def estimate(choosers: dict[str, _Scan]) -> int:
        return sum(len(c.left) + 1 for c in choosers.values())

    rows = _drive(scenario, chosen, lambda _a: _Scan(counts), p99_limit_us, seed=seed,
                  replications=replications, max_replications=max_reps,
                  confidence=confidence, jobs=jobs, scheduler=scheduler, store=store,
                  progress=progress, estimate=estimate)
    return CapacityResult(list(rows), chosen, p99_limit_us, seed, confidence,
                          max(counts, default=0), "scan")
