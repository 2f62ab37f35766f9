"""EEVDF group scheduling, Linux 6.6 on (``kernel/sched/fair.c``, S50), with bandwidth control.

Earliest Eligible Virtual Deadline First replaced CFS's pick and placement in Linux 6.6. Each
group keeps a **virtual runtime** ``v`` advanced by ``ran * unit / weight`` as in CFS
(``update_curr``), and in addition a **virtual deadline** ``d = v + slice * unit / weight``
(``update_deadline``: ``vd_i = ve_i + r_i / w_i``, with ``r_i`` the base slice). The reference
point is the weighted average ``V = sum(w_i * v_i) / sum(w_i)`` over the runnable groups
(``avg_vruntime``); a group is **eligible** when ``v <= V`` (``entity_eligible``: it has not
received more than its share), and ``pick_eevdf`` runs the eligible group with the earliest
deadline.

* **Slices.** A group runs until its vruntime reaches its deadline; then it gets a new deadline
  ``v + slice * unit / weight`` and the scheduler picks again. The deadline is checked in
  ``update_curr``, which a busy loop reaches at the timer tick: without ``hrtick`` the slice
  ends at the first tick after the deadline (the overshoot is charged to ``v``).
* **Placement by lag** (``place_entity``, ``update_entity_lag``). When a group's last task
  sleeps its lag ``vlag = V - v`` is saved, clamped to ``max(2 * slice, tick) * unit / weight``
  (``calc_delta_fair``). When it wakes it is placed at ``v = V - vlag * (W + w) / W``, where
  ``W`` is the weight of the other runnable groups: the inflation keeps its lag after it joins
  the average. A group that ran more than its share before sleeping comes back behind; one
  that got less comes back ahead. There is no sleeper credit and no wake-up granularity.
* **Wake-up preemption** (``check_preempt_wakeup_fair``): the woken group preempts CPU-bound
  work if ``pick_eevdf`` would now pick it: the runner is no longer eligible, or it has used
  its slice and the waker's deadline is earlier. With ``RUN_TO_PARITY`` (on by default) an
  eligible runner within its slice keeps the CPU until its deadline.

Bandwidth control is CFS's (:class:`~virtlab.sched.cfs.CfsPolicy`). Simplifications: one
global run queue of groups (the average ``V`` is taken over every runnable group, running or
waiting); a group entity is never placed with ``ENQUEUE_INITIAL`` (that halves the first slice
of a forked task); a group running on several cores advances one vruntime.

States of a group: as CFS. Invariants: ``sum(w_i * (V - v_i)) = 0`` over the runnable groups
(lags sum to zero); a running group's deadline is ahead of its vruntime at the start of a stint.
"""

from __future__ import annotations

from typing import Any

from virtlab.sched.base import Node, Policy
from virtlab.sched.cfs import CfsGroup, CfsPolicy
from virtlab.sched.params import GuestSchedParams

__all__ = ["EevdfPolicy", "EevdfGroup"]

_EPS = 1e-9


class EevdfGroup(CfsGroup):
    """A group entity with a virtual deadline and a saved lag (see the module docstring)."""

    __slots__ = ("deadline", "vlag")

    def __init__(self, name: str, policy: Policy, limit: float, weight: int,
                 sched: GuestSchedParams, slice_us: float) -> None:
        super().__init__(name, policy, limit, weight, sched, slice_us)
        self.deadline = 0.0
        self.vlag = 0.0


class EevdfPolicy(CfsPolicy):
    """Earliest eligible virtual deadline first among groups, with CFS bandwidth control."""

    name = "eevdf"

    def _make(self, name: str, sched: GuestSchedParams, cpus: int, limit: float) -> Node:
        group = EevdfGroup(name, self, limit, self._weight(sched), sched,
                           self.params.cfs_bandwidth_slice_us)
        group.deadline = self._vslice(group)
        return group

    # Virtual time ------------------------------------------------------------------------------
    def _vslice(self, group: EevdfGroup) -> float:
        """``calc_delta_fair(slice, se)``: the base slice in the group's virtual time."""
        return self.params.cfs_base_slice_us * self.unit / group.weight

    def _avg_vruntime(self, now: float, also: EevdfGroup | None = None,
                      skip: EevdfGroup | None = None) -> tuple[float, float]:
        """``(V, W)``: the weighted average vruntime of the runnable groups and their weight.

        ``also`` counts a group that is leaving (its lag is taken against an average that
        still contains it); ``skip`` leaves out a group that is joining. With no runnable group
        ``V`` is ``min_vruntime`` (``avg_vruntime`` of an empty queue).
        """
        total = weighted = 0.0
        for node in self.nodes:
            group: EevdfGroup = node  # type: ignore[assignment]
            if group is skip or (group.active == 0 and group is not also):
                continue
            total += group.weight
            weighted += group.weight * self._vruntime_now(group, now)
        if total == 0.0:
            return self.min_vruntime, 0.0
        return weighted / total, total

    def _eligible_at(self, group: EevdfGroup, average: float, now: float) -> bool:
        """``entity_eligible``: it has not run ahead of the average."""
        return self._vruntime_now(group, now) <= average + _EPS

    # Questions ---------------------------------------------------------------------------------
    def key(self, node: Node, head_seq: int, now: float) -> tuple[Any, ...]:
        """Eligible groups by earliest deadline; if none is eligible, the smallest vruntime.

        The fallback matters only on several cores, where the eligible groups may all be
        running already (``pick_eevdf`` falls back to the leftmost entity too).
        """
        assert isinstance(node, EevdfGroup)
        average, _weight = self._avg_vruntime(now)
        if self._eligible_at(node, average, now):
            return (0, node.deadline, head_seq)
        return (1, self._vruntime_now(node, now), head_seq)

    def quantum_us(self, node: Node, core: int, now: float) -> float:
        """Until the vruntime reaches the deadline (at the next tick without hrtick), or quota."""
        assert isinstance(node, EevdfGroup)
        left_v = max(0.0, node.deadline - self._vruntime_now(node, now))
        slice_us = left_v * node.weight / self.unit / max(1, node.running)
        return self._at_tick_us(now, min(slice_us, self._bandwidth_quantum_us(node, core, now)))

    def preempt_delay_us(self, waker: Node, running: Node, stint_us: float,
                         now: float) -> float | None:
        """Preempt if ``pick_eevdf`` would now pick the waker over the runner (RUN_TO_PARITY)."""
        assert isinstance(waker, EevdfGroup) and isinstance(running, EevdfGroup)
        average, _weight = self._avg_vruntime(now)
        if not self._eligible_at(waker, average, now):
            return None
        current = self._vruntime_now(running, now)
        in_slice = current < running.deadline - _EPS
        if current > average + _EPS:
            return 0.0  # the runner has had more than its share: it is not eligible
        if in_slice:
            return None  # RUN_TO_PARITY: an eligible runner finishes its slice
        # update_curr would give the runner a new deadline; the earlier deadline wins.
        renewed = current + self._vslice(running)
        return 0.0 if waker.deadline < renewed else None

    # Reports -----------------------------------------------------------------------------------
    def on_wake(self, node: Node, now: float) -> None:
        """``place_entity``: place at ``V`` minus the saved lag, inflated by ``(W + w) / W``."""
        assert isinstance(node, EevdfGroup)
        average, others = self._avg_vruntime(now, skip=node)
        lag = node.vlag * (others + node.weight) / others if others > 0.0 else 0.0
        node.vruntime = average - lag
        node.deadline = node.vruntime + self._vslice(node)
        if node.bw is not None:
            node.bw.active_period = True

    def on_sleep(self, node: Node, now: float) -> None:
        """``update_entity_lag``: save ``V - v``, clamped to ``max(2 slice, tick)`` of vtime."""
        assert isinstance(node, EevdfGroup)
        average, _weight = self._avg_vruntime(now, also=node)
        limit = max(2.0 * self.params.cfs_base_slice_us, self.params.tick_us) * (
            self.unit / node.weight)
        node.vlag = min(limit, max(-limit, average - node.vruntime))

    def reweight(self, node: Node, weight: float, now: float) -> None:
        """``reweight_entity``: lag and the deadline's distance scale by old / new weight."""
        assert isinstance(node, EevdfGroup)
        old = node.weight
        super().reweight(node, weight, now)
        node.vlag *= old / weight
        current = self._vruntime_now(node, now)
        node.deadline = current + (node.deadline - current) * old / weight

    def stop(self, node: Node, core: int, ran_us: float, start_us: float, now: float) -> None:
        """Advance the vruntime; a group that reached its deadline gets a new slice."""
        assert isinstance(node, EevdfGroup)
        super().stop(node, core, ran_us, start_us, now)
        if node.vruntime >= node.deadline - _EPS:
            node.deadline = node.vruntime + self._vslice(node)  # update_deadline

    def stats(self, node: Node) -> dict[str, float]:
        """CFS's counters, plus the deadline and the saved lag."""
        assert isinstance(node, EevdfGroup)
        row = super().stats(node)
        row.update({"deadline_us": node.deadline, "vlag_us": node.vlag})
        return row
