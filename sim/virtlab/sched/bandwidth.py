"""CFS bandwidth control: a group's quota per period, handed to cores in slices (S38, S51).

One :class:`Bandwidth` per task group, shared by the group's entities on every CPU when the
run queues are per CPU (``kernel/sched/fair.c``: ``struct cfs_bandwidth`` of the task group and
the ``runtime_remaining`` of each CPU's ``cfs_rq``). The period timer
(``sched_cfs_period_timer``) refills the global pool to ``quota`` every ``period``; a core
running the group takes runtime from the pool in slices of ``cfs_bandwidth_slice_us``
(``assign_cfs_rq_runtime``) and returns what a stint did not use (the kernel keeps up to 1 ms
per CPU; we return it all). Runtime used beyond the slice, because the kernel notices an
exhausted slice only at the next tick (``account_cfs_rq_runtime`` from ``update_curr``) or
because short work ran to its end, is a debt the next period repays (the kernel's
``distribute_cfs_runtime`` first covers the negative ``runtime_remaining``).

States: *not throttled* (pool > 0) and *throttled* (pool empty: no entity of the group may
start). Counters as in ``cpu.stat``: ``nr_periods`` (periods in which the group was active),
``nr_throttled`` (periods in which it was throttled), ``throttled_us``. Invariant: by the end of
period ``k`` the group has run at most ``(k + 1) x quota`` plus the debts still to repay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simpy.events import ProcessGenerator

from virtlab.sched.base import INF, Node

__all__ = ["Bandwidth"]


class Bandwidth:
    """The quota of one task group (see the module docstring).

    ``group`` is the node whose activity counts as the group's (the group itself under one
    global run queue; the group's node above its per-CPU entities otherwise).
    """

    __slots__ = ("group", "quota_us", "period_us", "slice_us", "pool_us", "silo",
                 "throttled_at", "throttled_period", "active_period", "nr_periods",
                 "nr_throttled", "throttled_us", "slices", "period_end_us", "running_timer")

    def __init__(self, group: Node, quota_us: float, period_us: float, slice_us: float) -> None:
        self.group = group
        self.quota_us = quota_us
        self.period_us = period_us
        self.slice_us = slice_us
        self.pool_us = quota_us
        self.silo: dict[int, float] = {}  # runtime handed to each core's current stint
        self.throttled_at: float | None = None
        self.throttled_period = False
        self.active_period = False
        self.nr_periods = 0
        self.nr_throttled = 0
        self.throttled_us = 0.0
        self.slices = 0
        self.period_end_us = period_us
        self.running_timer = False

    def run_periods(self, env: Any, reschedule: Callable[[], None],
                    trace: Callable[[str], None]) -> ProcessGenerator:
        """The period timer: count the period, then refill the pool (debts carry over)."""
        while True:
            self.period_end_us = env.now + self.period_us
            yield env.timeout(self.period_us)
            now = env.now
            active = self.group.active > 0
            if self.active_period or active:
                self.nr_periods += 1
            if self.throttled_period:
                self.nr_throttled += 1
            if self.throttled_at is not None:
                self.throttled_us += now - self.throttled_at
                self.throttled_at = None
                trace("unthrottled: quota refilled")
            self.throttled_period = False
            self.active_period = active
            self.pool_us = self.quota_us + min(self.pool_us, 0.0)
            reschedule()

    def may_run(self, now: float, trace: Callable[[str], None]) -> bool:
        """Not while throttled (the pool of this period is empty); count the throttling."""
        if self.pool_us > 0.0:
            return True
        if self.throttled_at is None:
            self.throttled_at = now
            self.throttled_period = True
            trace(f"throttled: quota of {self.quota_us:g} µs used")
        return False

    def take(self, core: int) -> None:
        """A stint begins on ``core``: hand it a slice of the pool (what is left, at most)."""
        take = min(self.slice_us, max(self.pool_us, 0.0))
        self.pool_us -= take
        self.silo[core] = take
        self.slices += 1

    def left_us(self, core: int) -> float:
        """Runtime left in ``core``'s slice."""
        return self.silo.get(core, INF)

    def settle(self, core: int, ran_us: float) -> None:
        """A stint ended: return what it did not use, or charge its overrun to the pool."""
        self.pool_us += self.silo.pop(core) - ran_us

    def stats(self, now: float) -> dict[str, float]:
        """``cpu.stat``'s counters as of ``now``.

        A period that ends exactly now counts even if its timer has not run yet (a run stops
        before the events of its last instant).
        """
        periods, throttled, throttled_us = self.nr_periods, self.nr_throttled, self.throttled_us
        if self.throttled_at is not None:
            throttled_us += now - self.throttled_at
        if now >= self.period_end_us - 1e-6:
            periods += self.active_period or self.group.active > 0
            throttled += self.throttled_period
        return {"nr_periods": float(periods), "nr_throttled": float(throttled),
                "throttled_us": throttled_us, "bandwidth_slices": float(self.slices)}
