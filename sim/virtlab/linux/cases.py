"""The scheduling cases of issue 11, defined once for the real kernel and for the simulator.

Each :class:`Case` says which cgroups to make (weight, quota), how many CPU-bound tasks each
holds and the CPU each task is pinned to, and what the kernel's rules make of it. The real run
(:mod:`virtlab.linux.demo_cases`) builds exactly that with cgroups and ``sched_setaffinity``;
:func:`scenario` turns the same definition into a simulator scenario (the examples named in
``Case.example`` are the hand-written versions of the same thing), so the two columns of the
table come from one description.

Two kinds of number:

* **shares of contention** (``normalise=True``): each CPU's time that went to the case's tasks
  counts as 100 %, because on a shared machine other processes take a part of every CPU that
  the simulator, alone on its host, does not have. A weight divides contention, so this is the
  number the weights speak about.
* **% of a CPU** (``normalise=False``): CPU time over wall-clock time, for quotas, which cap
  absolute time whatever else runs.

The expected values come from the kernel's rules (``kernel/sched/fair.c``): weight over the sum
of weights; ``calc_group_shares`` splitting a group's weight over the CPUs its tasks run on;
quota over period; EEVDF's lag-based placement (no sleeper credit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CASES", "Case", "Expect", "GroupSpec", "Row", "case_names", "find_case",
           "scenario", "side_by_side", "simulate"]


@dataclass(frozen=True)
class Expect:
    """An expected value from the kernel's rules: ``lo`` to ``hi`` (equal when exact), in %."""

    lo: float
    hi: float
    text: str = ""  # shown instead of the numbers when set

    def __post_init__(self) -> None:
        if self.lo > self.hi:
            raise ValueError(f"Expect: lo {self.lo} > hi {self.hi}")

    @classmethod
    def exactly(cls, value: float) -> Expect:
        """A single value."""
        return cls(value, value)

    def show(self) -> str:
        """``62.5``, ``33.3-37.0`` or the text."""
        if self.text:
            return self.text
        return f"{self.lo:.1f}" if self.lo == self.hi else f"{self.lo:.1f}-{self.hi:.1f}"

    def distance(self, value: float) -> float:
        """How far ``value`` lies outside the expected range, in points (0 inside)."""
        return max(self.lo - value, value - self.hi, 0.0)


@dataclass(frozen=True)
class GroupSpec:
    """One cgroup of a case and its tasks.

    Invariant: one CPU index per task (``len(cpus)`` tasks), each below the case's ``cpus``.
    A task with ``run_ms > 0`` runs that much CPU time, then sleeps ``sleep_ms``, for ever;
    otherwise it is a busy loop.
    """

    name: str
    weight: int = 100  # cgroup v2 units; v1 shares = weight * 1024 / 100
    quota_ms: float = 0.0  # 0: no quota
    period_ms: float = 100.0
    cpus: tuple[int, ...] = (0,)
    run_ms: float = 0.0
    sleep_ms: float = 0.0

    @property
    def threads(self) -> int:
        """Number of tasks in the group."""
        return len(self.cpus)


@dataclass(frozen=True)
class Case:
    """A scheduling case: its groups, what is measured, and what the kernel's rules give.

    ``expected`` maps each group to its expected share; ``expected_cfs`` overrides entries on a
    CFS kernel (before Linux 6.6). ``throttling`` maps groups with a quota to the expected
    percentage of periods in which they are throttled.
    """

    name: str
    title: str
    cpus: int
    groups: tuple[GroupSpec, ...]
    normalise: bool
    expected: Mapping[str, Expect]
    rule: str
    example: str
    expected_cfs: Mapping[str, Expect] = field(default_factory=dict)
    throttling: Mapping[str, Expect] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for group in self.groups:
            if not group.cpus or any(not 0 <= cpu < self.cpus for cpu in group.cpus):
                raise ValueError(f"{self.name}/{group.name}: CPUs {group.cpus} not in "
                                 f"0..{self.cpus - 1}")
        if set(self.expected) != {group.name for group in self.groups}:
            raise ValueError(f"{self.name}: an expected value for each group, and only those")

    def expect(self, fair: str | None) -> dict[str, Expect]:
        """Expected shares on a kernel whose fair scheduler is ``fair`` (``cfs``/``eevdf``)."""
        return {**self.expected, **(self.expected_cfs if fair == "cfs" else {})}


def _pct(value: float) -> Expect:
    return Expect.exactly(value)


CASES: tuple[Case, ...] = (
    Case("shares-1-2-5", "three groups weighted 1:2:5 on one CPU", 1,
         (GroupSpec("w100", 100), GroupSpec("w200", 200), GroupSpec("w500", 500)), True,
         {"w100": _pct(12.5), "w200": _pct(25.0), "w500": _pct(62.5)},
         "each group gets weight / sum of weights", "shares-3-1.toml (with 1:2:5)"),
    Case("quota-not-binding", "a 60 ms / 100 ms quota beside an equal group on one CPU", 1,
         (GroupSpec("limited", quota_ms=60.0, period_ms=100.0), GroupSpec("other")), True,
         {"limited": _pct(50.0), "other": _pct(50.0)},
         "equal weights give 50 %, below the 60 % cap: the quota never binds",
         "quota-20-100.toml (quota 60 ms, a second group)",
         throttling={"limited": _pct(0.0)}),
    Case("quota-short-period", "a 2 ms / 5 ms quota, a busy loop alone on one CPU", 1,
         (GroupSpec("limited", quota_ms=2.0, period_ms=5.0),), False,
         {"limited": _pct(40.0)},
         "quota / period = 40 % in the long run; without HRTICK an exhausted quota is noticed "
         "at the next tick, so it overruns and repays; nr_throttled counts the periods that end "
         "throttled, most of them (how many depends on where the ticks fall in each period)",
         "quota-short-period.toml",
         throttling={"limited": Expect(50.0, 100.0)}),
    Case("sleeper-and-hog", "runs 10 ms, sleeps 10 ms, beside a busy loop, one CPU", 1,
         (GroupSpec("sleeper", run_ms=10.0, sleep_ms=10.0), GroupSpec("hog")), True,
         {"sleeper": _pct(100 / 3), "hog": _pct(200 / 3)},
         "EEVDF: half the CPU while runnable, so 10 ms take 20 ms: a third; CFS's sleeper "
         "credit (3 ms) gives at most 10/27 at HZ 1000 (a coarser tick lets the sleeper run on "
         "to the next tick, and get more)", "sleeper-and-hog.toml",
         expected_cfs={"sleeper": Expect(100 / 3, 1000 / 27), "hog": Expect(1700 / 27, 200 / 3)}),
    Case("shares-2-1-one-cpu", "2:1, the heavy group with two tasks, all on one CPU", 1,
         (GroupSpec("heavy", 200, cpus=(0, 0)), GroupSpec("light", 100)), True,
         {"heavy": _pct(200 / 3), "light": _pct(100 / 3)},
         "on one CPU the number of tasks in a group does not matter: 2 : 1",
         "shares-2-1-two-threads.toml (host.cores = 1)"),
    Case("shares-2-1-two-cpus", "2:1, heavy's tasks on CPUs 0 and 1, light on CPU 0", 2,
         (GroupSpec("heavy", 200, cpus=(0, 1)), GroupSpec("light", 100, cpus=(0,))), True,
         {"heavy": _pct(150.0), "light": _pct(50.0)},
         "calc_group_shares splits heavy's weight over its two CPUs (100 each), so CPU 0 "
         "splits 1 : 1 and heavy has CPU 1 alone: 150 % and 50 % (one global queue: 133/67)",
         "shares-2-1-two-threads.toml"),
    Case("quota-1.5-cpus", "150 ms / 100 ms quota, two busy tasks on two CPUs", 2,
         (GroupSpec("limited", quota_ms=150.0, period_ms=100.0, cpus=(0, 1)),), False,
         {"limited": _pct(150.0)},
         "a quota above its period: 1.5 CPUs, throttled in every period",
         "quota-1.5-cpus.toml",
         throttling={"limited": _pct(100.0)}),
)


def case_names() -> list[str]:
    """Names of all cases, in order."""
    return [case.name for case in CASES]


def find_case(name: str) -> Case:
    """The case called ``name`` (``KeyError`` if there is none)."""
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(name)


def scenario(case: Case, *, fair: str, hz: int | None, hrtick: bool, cgroup: int,
             seconds: float = 3.0, warmup_s: float = 0.3) -> dict[str, Any]:
    """The simulator scenario (as a dict for :func:`virtlab.config.scenario_from_dict`).

    ``fair`` is ``"cfs"`` or ``"eevdf"``; ``hz`` ``None`` keeps the profile's tick; ``cgroup``
    is 1 or 2 (v1 gets ``cpu.shares`` = weight * 1024 / 100, as the real run writes). Per-CPU run
    queues are the kernel's; on one CPU they change nothing.
    """
    guests = []
    for group in case.groups:
        sched: dict[str, Any] = ({"shares": round(group.weight * 1024 / 100)} if cgroup == 1
                                 else {"weight": group.weight})
        if group.quota_ms:
            sched.update(cfs_quota_us=group.quota_ms * 1000, cfs_period_us=group.period_ms * 1000)
        workload: dict[str, Any] = {"kind": "cpu", "name": "busy", "threads": group.threads}
        if group.run_ms:
            workload.update(name="runs-and-sleeps", chunk_us=group.run_ms * 1000,
                            think_us=group.sleep_ms * 1000)
        guests.append({"name": group.name, "approach": "container", "vcpus": group.threads,
                       "sched": sched, "workloads": [workload]})
    scheduler: dict[str, Any] = {"host": fair, "hrtick": hrtick, "runqueues": "per-cpu",
                                 "cgroup": f"v{cgroup}"}
    if hz is not None:
        scheduler["hz"] = hz
    return {"name": case.name, "duration_us": (warmup_s + seconds) * 1e6,
            "warmup_us": warmup_s * 1e6, "host": {"cores": case.cpus},
            "scheduler": scheduler, "guests": guests}


@dataclass(frozen=True)
class Simulated:
    """The simulator's answer: % of a CPU per group, % of periods throttled per quota group."""

    pct: dict[str, float]
    throttled_pct: dict[str, float]


def simulate(case: Case, **kwargs: Any) -> Simulated:
    """Run the simulator on the case (keywords as for :func:`scenario`)."""
    from virtlab.config import scenario_from_dict
    from virtlab.model import run

    result = run(scenario_from_dict(scenario(case, **kwargs)))
    pct = {s.guest: s.guest_cpu_pct for s in result.summaries}
    throttled = {}
    for group in case.groups:
        stats = result.sched_stats.get(group.name, {})
        if stats.get("nr_periods"):
            throttled[group.name] = 100.0 * stats["nr_throttled"] / stats["nr_periods"]
    return Simulated(pct, throttled)


@dataclass(frozen=True)
class Row:
    """One line of the side-by-side table (values in %; ``None``: not available)."""

    case: str
    group: str
    measured: float | None
    simulated: float | None
    expected: Expect


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def side_by_side(rows: Sequence[Row]) -> str:
    """The table: case, group, measured %, simulated %, expected by the kernel's rules."""
    from virtlab.linux.text import table

    shown = []
    last = None
    for row in rows:
        shown.append((row.case if row.case != last else "", row.group, _num(row.measured),
                      _num(row.simulated), row.expected.show()))
        last = row.case
    return table(("case", "group", "measured %", "simulated %", "kernel rule %"), shown)
