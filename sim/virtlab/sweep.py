"""Sweeps and capacity questions: many scenarios, each point independent.

* :func:`sweep` runs a full factorial grid of parameter values (dotted keys as in
  ``--set``), optionally under several approaches. A point whose values are invalid or whose
  run fails is reported with its error; the other points are kept.
* :func:`capacity` answers "how many copies of this guest fit on the host before the p99
  latency of the worst guest exceeds a limit?", per approach.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from virtlab.config import Scenario, scenario_from_dict
from virtlab.errors import ConfigError
from virtlab.experiment import Comparison, Entry, Result, _entries, _map
from virtlab.paths import APPROACHES

__all__ = ["SweepPoint", "sweep", "with_guest_copies", "CapacityRow", "capacity",
           "apply_assignment"]


def apply_assignment(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (``guests[0].vcpus``, ``paravirtual.ring_size``) in a scenario dict."""
    import re

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
    """One point of a sweep: its factor values and the comparison (or the error)."""

    values: dict[str, Any]
    comparison: Comparison | None
    error: str | None = None


def _grid(factors: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(factors)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(factors[k] for k in keys))]


def sweep(scenario: Scenario, factors: Mapping[str, Sequence[Any]],
          approaches: Iterable[str] | None = None, *, seed: int = 0, replications: int = 3,
          confidence: float = 0.95, jobs: int = 1) -> list[SweepPoint]:
    """Run every combination of ``factors`` (dotted key -> values), each under ``approaches``.

    ``approaches=None`` keeps the scenario's own. Points share seeds (common random numbers).
    """
    chosen = None if approaches is None else list(approaches)
    base = scenario.to_dict()
    prepared: list[tuple[dict[str, Any], list[Scenario] | str]] = []
    for values in _grid(factors):
        data = _deep_copy(base)
        try:
            for key, value in values.items():
                apply_assignment(data, key, value)
            variant = scenario_from_dict(data, scenario.profile)
            prepared.append((values, [variant] if chosen is None
                             else [variant.with_approach(a) for a in chosen]))
        except ConfigError as err:
            prepared.append((values, f"ConfigError: {err}"))
    tasks = [(v, seed, r) for _, group in prepared if not isinstance(group, str)
             for v in group for r in range(replications)]
    outcomes = iter(_map(tasks, jobs))
    points = []
    for values, group in prepared:
        if isinstance(group, str):
            points.append(SweepPoint(values, None, group))
            continue
        results = []
        for variant in group:
            chunk = [next(outcomes) for _ in range(replications)]
            errors = [c for c in chunk if isinstance(c, str)]
            if errors:
                entries = [Entry(g.name, w.name, g.approach, w.kind, replications, confidence,
                                 error=errors[0]) for g in variant.guests for w in g.workloads]
            else:
                entries = _entries(variant, variant.guests[0].approach, chunk, confidence)
            results.append(Result(variant, seed, replications, confidence, entries))
        points.append(SweepPoint(values, Comparison(results)))
    return points


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def with_guest_copies(scenario: Scenario, count: int, template: int = 0) -> Scenario:
    """``scenario`` with its guests replaced by ``count`` copies of guest ``template``."""
    if count < 1:
        raise ConfigError("guests", f"count must be >= 1, got {count}")
    guest = scenario.guests[template]
    copies = tuple(dataclasses.replace(guest, name=f"{guest.name}{i}") for i in range(count))
    return dataclasses.replace(scenario, guests=copies)


@dataclass(frozen=True)
class CapacityRow:
    """The worst guest's p99 latency and mean throughput at one guest count and approach."""

    approach: str
    guests: int
    worst_p99_us: float
    total_throughput_per_s: float
    fits: bool
    error: str | None = None


def capacity(scenario: Scenario, p99_limit_us: float, counts: Sequence[int],
             approaches: Iterable[str] = APPROACHES, *, seed: int = 0,
             replications: int = 1, jobs: int = 1) -> list[CapacityRow]:
    """Check, per approach and guest count, whether the worst guest's p99 stays within the limit."""
    if p99_limit_us <= 0:
        raise ConfigError("p99_limit_us", f"must be positive, got {p99_limit_us}")
    chosen = list(approaches)
    variants = [(n, with_guest_copies(scenario, n).with_approach(a))
                for n in counts for a in chosen]
    tasks = [(v, seed, r) for _, v in variants for r in range(replications)]
    outcomes = iter(_map(tasks, jobs))
    rows = []
    for count, variant in variants:
        approach = variant.guests[0].approach
        chunk = [next(outcomes) for _ in range(replications)]
        errors = [c for c in chunk if isinstance(c, str)]
        if errors:
            rows.append(CapacityRow(approach, count, float("nan"), float("nan"), False,
                                    errors[0]))
            continue
        p99s = [max(s.latency_p99_us for s in summaries) for summaries in chunk]
        tputs = [sum(s.throughput_per_s for s in summaries) for summaries in chunk]
        worst = sum(p99s) / len(p99s)
        rows.append(CapacityRow(approach, count, worst, sum(tputs) / len(tputs),
                                worst <= p99_limit_us))
    return rows
