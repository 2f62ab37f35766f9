"""Sweeps: a grid of parameter values, each point run under one or more approaches.

* :func:`iter_sweep` streams the full factorial grid of parameter values (dotted keys as in
  ``--set``): grid points are generated lazily (``itertools.product``), at most
  ``max_in_flight`` runs are submitted at a time, and each point is yielded as soon as all of
  its runs (approaches × replications) are in. Memory is bounded by the runs in flight, not by
  the grid: an 8-factor grid of 10 values each is never materialised.
* :func:`sweep` collects the points in grid order into a :class:`SweepResult`.

A point whose values are invalid, or one of whose runs fails, is reported with its error; the
other points are kept. With a results store every run is stored as it completes, so an
interrupted sweep resumes where it stopped (docs/results.md).

Capacity searches live in :mod:`virtlab.capacity` (re-exported here).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from virtlab.config import Scenario, scenario_from_dict
from virtlab.errors import ConfigError
from virtlab.experiment import Comparison, result_of
from virtlab.hardware import release_dependents

__all__ = ["SweepPoint", "SweepResult", "sweep", "iter_sweep", "grid_size", "iter_grid",
           "with_guest_copies", "CapacityRow", "CapacityResult", "capacity",
           "capacity_search", "apply_assignment"]


def apply_assignment(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (``guests[0].vcpus``, ``paravirtual.ring_size``) in a scenario dict."""
    key = key.strip()
    if not key:
        raise ConfigError("--set", "empty key; expected e.g. paravirtual.ring_size=512")
    # name ( '.' name | '[' index ']' )* -- anything else is refused, not skipped.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d{1,9}\])*",
                        key):
        raise ConfigError(key, "malformed key; expected names joined by '.' with list indexes "
                               "in brackets, e.g. paravirtual.ring_size or guests[0].vcpus")
    tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\[\d+\]", key)
    node: Any = data
    for token, following in zip(tokens, [*tokens[1:], None], strict=True):
        last = following is None
        if token.startswith("["):
            index = int(token[1:-1])
            if not isinstance(node, list) or index >= len(node):
                raise ConfigError(key, f"index {index} is out of range")
            if last:
                node[index] = value
            else:
                node = node[index]
        else:
            if not isinstance(node, dict):
                raise ConfigError(key, "cannot index into a value")
            if last:
                node[token] = value
            else:
                node = node.setdefault(token, [] if following.startswith("[") else {})


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: its factor values and the comparison of its approaches (or the error).

    ``index`` is the point's position in the grid (row-major over the factors, in order).
    """

    values: dict[str, Any]
    comparison: Comparison | None
    error: str | None = None
    index: int = 0


def grid_size(factors: Mapping[str, Sequence[Any]]) -> int:
    """Number of points of the full factorial grid."""
    return math.prod(len(values) for values in factors.values())


def iter_grid(factors: Mapping[str, Sequence[Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(index, {key: value})`` for every grid point, lazily, in row-major order."""
    keys = list(factors)
    for index, combo in enumerate(itertools.product(*(factors[k] for k in keys))):
        yield index, dict(zip(keys, combo, strict=True))


def _variants(base: dict[str, Any], profile: str, values: Mapping[str, Any],
              approaches: list[str] | None) -> list[Scenario]:
    data = _deep_copy(base)
    varied = [k.strip()[len("hypervisor."):] for k in values
              if k.strip().startswith("hypervisor.")]
    if varied and isinstance(data.get("hypervisor"), dict):
        # A varied preset or exit term re-derives what came from it (virtlab.hardware).
        data["hypervisor"] = release_dependents(data["hypervisor"], varied)
    for key, value in values.items():
        apply_assignment(data, key, value)
    variant = scenario_from_dict(data, profile)
    return [variant] if approaches is None else [variant.with_approach(a) for a in approaches]


@dataclass
class _Pending:
    values: dict[str, Any]
    variants: list[Scenario]
    outcomes: dict[tuple[int, int], Any]


def iter_sweep(scenario: Scenario, factors: Mapping[str, Sequence[Any]],
               approaches: Iterable[str] | None = None, *, seed: int = 0,
               replications: int = 3, confidence: float = 0.95, jobs: int | None = None,
               scheduler: str | None = None, store: Any = None, progress: Any = None,
               max_in_flight: int | None = None) -> Iterator[SweepPoint]:
    """Yield the grid's points as they complete (see the module docstring).

    ``approaches=None`` keeps the scenario's own. Points share seeds (common random numbers).
    Runs execute as in :func:`virtlab.experiment.collect`.
    """
    from virtlab.executors import Runner, Task, make_engine

    if replications < 1:
        raise ConfigError("replications", f"must be an integer >= 1, got {replications}")
    for key, values in factors.items():
        if not values:
            raise ConfigError(key, "a factor needs at least one value")
    chosen = None if approaches is None else list(approaches)
    if chosen is not None and not chosen:
        raise ConfigError("approaches", "name at least one approach (or None for the "
                                        "scenario's own)")
    base = scenario.to_dict()
    total = grid_size(factors) * (1 if chosen is None else len(chosen)) * replications
    if progress is not None:
        progress.expect(total)
    pending: dict[int, _Pending] = {}
    invalid: deque[SweepPoint] = deque()

    def tasks() -> Iterator[tuple[tuple[int, int, int], Task]]:
        for index, values in iter_grid(factors):
            try:
                variants = _variants(base, scenario.profile, values, chosen)
            except ConfigError as err:
                invalid.append(SweepPoint(values, None, f"ConfigError: {err}", index))
                if progress is not None:
                    progress.skip(len(chosen or [0]) * replications)
                continue
            pending[index] = _Pending(values, variants, {})
            for v, variant in enumerate(variants):
                for r in range(replications):
                    yield (index, v, r), Task(variant, seed, r)

    engine = make_engine(jobs, scheduler, total)
    with Runner(engine, store, progress) as runner:
        for (index, v, r), outcome in runner.map(tasks(), max_in_flight):
            while invalid:
                yield invalid.popleft()
            point = pending[index]
            point.outcomes[v, r] = outcome.error or list(outcome.summaries)
            if len(point.outcomes) == len(point.variants) * replications:
                del pending[index]
                results = [result_of(variant, seed, confidence,
                                     [point.outcomes[v2, r2] for r2 in range(replications)])
                           for v2, variant in enumerate(point.variants)]
                yield SweepPoint(point.values, Comparison(results), None, index)
        while invalid:
            yield invalid.popleft()


class SweepResult(Sequence[SweepPoint]):
    """The points of a sweep in grid order, with what produced them."""

    def __init__(self, points: Iterable[SweepPoint], factors: Mapping[str, Sequence[Any]],
                 seed: int, replications: int, confidence: float) -> None:
        self.points = sorted(points, key=lambda p: p.index)
        self.factors = {k: list(v) for k, v in factors.items()}
        self.seed = seed
        self.replications = replications
        self.confidence = confidence

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: Any) -> Any:
        return self.points[index]

    @property
    def failed(self) -> int:
        """Points, or approaches of a point, that failed."""
        return sum(1 for p in self.points if p.error) + sum(
            1 for p in self.points if p.comparison is not None
            for r in p.comparison.results if any(e.error for e in r.entries))

    def to_frame(self):  # -> pandas.DataFrame
        """One row per point × approach × guest workload (docs/results.md, "sweep").

        Columns: ``study`` (``"sweep"``), ``point``, one ``vary:<key>`` column per factor,
        ``approach``, ``guest``, ``workload``, ``kind``, ``replications``, ``error``, every
        metric's replication mean and its ``<metric>_ci`` half-width.
        """
        import pandas as pd

        frames = []
        for point in self.points:
            head = {"study": "sweep", "point": point.index,
                    **{f"vary:{k}": v for k, v in point.values.items()}}
            if point.comparison is None:
                frames.append(pd.DataFrame([{**head, "error": point.error}]))
                continue
            frame = point.comparison.to_frame()
            for offset, (column, value) in enumerate(head.items()):
                frame.insert(offset, column, [value] * len(frame))
            frame.insert(len(head) + 4, "replications", self.replications)
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["study", "point"])
        frame = pd.concat(frames, ignore_index=True)
        return _uniform_factor_columns(frame)

    def to_json_dict(self) -> dict[str, Any]:
        """One JSON document: provenance and one item per point (entries or error)."""
        from virtlab import __version__

        return {"virtlab_version": __version__, "seed": self.seed,
                "replications": self.replications, "confidence": self.confidence,
                "factors": self.factors,
                "points": [{"point": p.index, "values": p.values, "error": p.error,
                            "entries": None if p.comparison is None
                            else [e.to_json_dict() for e in p.comparison.entries]}
                           for p in self.points]}


def _uniform_factor_columns(frame: Any) -> Any:
    """Factor columns mixing types (``4`` and ``"auto"``) become text, so Parquet can hold them."""
    for column in frame.columns:
        if str(column).startswith("vary:"):
            kinds = {type(v) for v in frame[column] if v is not None}
            if len(kinds) > 1 and not kinds <= {int, float}:
                frame[column] = frame[column].map(lambda v: None if v is None else str(v))
            elif kinds and not kinds <= {int, float, bool, str}:
                frame[column] = frame[column].map(repr)
    return frame


def sweep(scenario: Scenario, factors: Mapping[str, Sequence[Any]],
          approaches: Iterable[str] | None = None, *, seed: int = 0, replications: int = 3,
          confidence: float = 0.95, jobs: int | None = None, scheduler: str | None = None,
          store: Any = None, progress: Any = None,
          max_in_flight: int | None = None) -> SweepResult:
    """Run every combination of ``factors`` (dotted key -> values), each under ``approaches``.

    See :func:`iter_sweep`; this collects its points in grid order.
    """
    points = iter_sweep(scenario, factors, approaches, seed=seed, replications=replications,
                        confidence=confidence, jobs=jobs, scheduler=scheduler, store=store,
                        progress=progress, max_in_flight=max_in_flight)
    return SweepResult(points, factors, seed, replications, confidence)


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


from virtlab.capacity import (  # noqa: E402 - re-exported for existing callers
    CapacityResult,
    CapacityRow,
    capacity,
    capacity_search,
    with_guest_copies,
)
