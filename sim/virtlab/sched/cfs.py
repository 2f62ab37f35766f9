"""CFS group scheduling with bandwidth control (S38, S39).

Each group (a container's cgroup, or a KVM guest's) carries a **virtual runtime**: running
``ran`` µs advances it by ``ran * unit / weight``, where ``unit`` is the default weight (100 for
cgroup v2 ``cpu.weight``, 1024 for v1 ``cpu.shares``). The runnable group with the smallest
vruntime runs next, so over a long window each busy group's CPU time is proportional to its
weight. A group that wakes from sleep is placed at most ``cfs_sleeper_credit_us`` behind the
smallest vruntime (it cannot bank the time it slept), and preempts a CPU-bound group that is
more than ``cfs_wakeup_granularity_us`` (in its own weighted time) ahead of it.

**Bandwidth control** (``kernel/sched/fair.c``: ``account_cfs_rq_runtime``,
``assign_cfs_rq_runtime``, ``sched_cfs_period_timer``): a group with a quota gets
``cfs_quota_us`` of runtime per ``cfs_period_us`` in a global pool; the quota may exceed the
period (``tg_set_cfs_bandwidth`` allows it: 150 ms per 100 ms is 1.5 CPUs). A core running the
group takes runtime from the pool in slices of ``cfs_bandwidth_slice_us``; what a stint does not
use goes back to the pool when it ends (the kernel keeps up to 1 ms per CPU; we return it all).
Runtime is accounted in ``update_curr``, which a busy loop reaches at the timer tick: without
``hrtick`` an exhausted slice is noticed at the next tick boundary (``hz``), so the group
overruns its quota by up to a tick and repays the debt from the next period. When the pool is
empty the group is **throttled**: it cannot start until the period timer refills the pool.
Statistics as in ``cpu.stat``: ``nr_periods`` (periods in which the group was active),
``nr_throttled`` (periods in which it was throttled) and ``throttled_us``.

States of a group: *asleep*, *runnable*, *running*, *throttled* (runnable, pool empty).
Invariants: vruntime never decreases; per period a group runs at most its quota plus the
overrun of short work already running when the pool emptied (paid back from the next period).
"""

from __future__ import annotations

import math
from typing import Any

from virtlab.sched.bandwidth import Bandwidth
from virtlab.sched.base import INF, Node, Policy
from virtlab.sched.params import GuestSchedParams

__all__ = ["CfsPolicy", "CfsGroup"]


class CfsGroup(Node):
    """A CFS group (see the module docstring); ``bw`` holds its quota, if it has one."""

    __slots__ = ("weight", "full_weight", "vruntime", "bw")

    def __init__(self, name: str, policy: Policy, limit: float, weight: float,
                 sched: GuestSchedParams, slice_us: float) -> None:
        super().__init__(name, policy, limit=limit)
        self.weight = weight
        self.full_weight = weight  # the group's; per-CPU entities get a part of it
        self.vruntime = 0.0
        self.bw: Bandwidth | None = None
        if sched.cfs_quota_us >= 0.0:
            self.bw = Bandwidth(self, sched.cfs_quota_us, sched.cfs_period_us, slice_us)


class CfsPolicy(Policy):
    """The Completely Fair Scheduler's group level, with bandwidth control."""

    name = "cfs"

    def __init__(self, params: Any, cores: int) -> None:
        super().__init__(params, cores)
        self.unit = 1024 if params.cgroup == "v1" else 100
        self.min_vruntime = 0.0
        #: Running stints: core -> (group, time up to which the stint is charged to vruntime).
        self._marks: dict[int, tuple[CfsGroup, float]] = {}

    def _weight(self, sched: GuestSchedParams) -> int:
        return sched.cfs_weight(self.params.cgroup, self.params.shares_conversion)

    def _make(self, name: str, sched: GuestSchedParams, cpus: int, limit: float) -> Node:
        return CfsGroup(name, self, limit, self._weight(sched), sched,
                        self.params.cfs_bandwidth_slice_us)

    def _started(self, node: Node) -> None:
        assert isinstance(node, CfsGroup) and self.dispatcher is not None
        bw = node.bw
        if bw is not None and not bw.running_timer:
            bw.running_timer = True
            dispatcher = self.dispatcher

            def trace(detail: str) -> None:
                dispatcher.trace(bw.group.name, "sched", detail)

            dispatcher.env.process(bw.run_periods(dispatcher.env, dispatcher.reschedule, trace))

    def _update_min_vruntime(self) -> None:
        smallest = min((n.vruntime for n in self.nodes if n.active > 0),  # type: ignore[attr-defined]
                       default=None)
        if smallest is not None and smallest > self.min_vruntime:
            self.min_vruntime = smallest

    # Questions ---------------------------------------------------------------------------------
    def eligible(self, node: Node, now: float) -> bool:
        """Not while throttled (the pool of this period is empty)."""
        assert isinstance(node, CfsGroup)
        bw = node.bw
        if bw is None:
            return True
        group = bw.group
        return bw.may_run(now, lambda detail: self.trace(group, "sched", detail))

    def key(self, node: Node, head_seq: int, now: float) -> tuple[Any, ...]:
        """Smallest virtual runtime first."""
        return (node.vruntime, head_seq)  # type: ignore[attr-defined]

    def quantum_us(self, node: Node, core: int, now: float) -> float:
        """The base slice, or until the runtime this core took from the pool is noticed used.

        Both are checked in the tick (``check_preempt_tick``, ``account_cfs_rq_runtime``):
        without ``hrtick`` the stint ends at the first tick at or after the earlier of the two.
        """
        return self._at_tick_us(now, min(self.params.cfs_base_slice_us,
                                         self._bandwidth_quantum_us(node, core, now)))

    def _at_tick_us(self, now: float, quantum_us: float) -> float:
        """``quantum_us`` as the kernel notices it: exactly with hrtick, else at a tick."""
        if self.params.hrtick or quantum_us == INF:
            return quantum_us
        return self._next_tick_us(now + quantum_us) - now

    def _next_tick_us(self, time_us: float) -> float:
        """The first timer tick at or after ``time_us`` (ticks at multiples of ``tick_us``)."""
        tick = self.params.tick_us
        return math.ceil(time_us / tick - 1e-9) * tick

    def _bandwidth_quantum_us(self, node: Node, core: int, now: float) -> float:
        """Until the core's slice of quota runs out (before rounding to the tick).

        ``update_curr`` -> ``account_cfs_rq_runtime`` runs at the tick for a busy loop; only
        there does the kernel find ``runtime_remaining <= 0`` and ask the pool for more (or
        throttle). The overrun is charged to the pool and repaid from the next period.
        """
        assert isinstance(node, CfsGroup)
        return INF if node.bw is None else node.bw.left_us(core)

    def preempt_delay_us(self, waker: Node, running: Node, stint_us: float,
                         now: float) -> float | None:
        """Preempt if the waker is more than the wakeup granularity behind."""
        assert isinstance(waker, CfsGroup) and isinstance(running, CfsGroup)
        current = self._vruntime_now(running, now)
        granularity = self.params.cfs_wakeup_granularity_us * self.unit / waker.weight
        return 0.0 if waker.vruntime + granularity < current else None

    # Reports -----------------------------------------------------------------------------------
    def on_wake(self, node: Node, now: float) -> None:
        """Place a waking group at most the sleeper credit behind min_vruntime."""
        assert isinstance(node, CfsGroup)
        self._update_min_vruntime()
        placed = self.min_vruntime - self.params.cfs_sleeper_credit_us
        if placed > node.vruntime:
            node.vruntime = placed
        if node.bw is not None:
            node.bw.active_period = True

    def _vruntime_now(self, group: CfsGroup, now: float) -> float:
        """The group's vruntime including its stints still running (``update_curr``)."""
        vruntime = group.vruntime
        for running, mark in self._marks.values():
            if running is group:
                vruntime += (now - mark) * self.unit / group.weight
        return vruntime

    def reweight(self, node: Node, weight: float, now: float) -> None:
        """Change a group's weight (``reweight_entity``): charge running stints first."""
        assert isinstance(node, CfsGroup)
        for core, (running, mark) in self._marks.items():
            if running is node:
                node.vruntime += (now - mark) * self.unit / node.weight
                self._marks[core] = (node, now)
        node.weight = weight

    def start(self, node: Node, core: int, now: float) -> None:
        """With a quota, take a slice of runtime from the global pool."""
        assert isinstance(node, CfsGroup)
        self._marks[core] = (node, now)
        if node.bw is not None:
            node.bw.take(core)

    def stop(self, node: Node, core: int, ran_us: float, start_us: float, now: float) -> None:
        """Advance the virtual runtime; settle the slice with the pool."""
        assert isinstance(node, CfsGroup)
        _group, mark = self._marks.pop(core)
        node.vruntime += (now - mark) * self.unit / node.weight
        if node.bw is not None:
            # Return what the stint did not use, or pay its overrun from the pool.
            node.bw.settle(core, ran_us)
        self._update_min_vruntime()

    def stats(self, node: Node) -> dict[str, float]:
        """Weight and vruntime; with a quota, ``cpu.stat``'s counters as of now."""
        assert isinstance(node, CfsGroup)
        row = {"weight": float(node.weight), "vruntime_us": node.vruntime}
        if node.bw is not None and node.bw.group is node:
            now = self.dispatcher.env.now if self.dispatcher is not None else 0.0
            row.update(node.bw.stats(now))
        return row
