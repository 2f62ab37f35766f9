"""The OpenVZ/Virtuozzo fair CPU scheduler, level 1 (S42).

Start-tag fair queueing across containers (``kernel/fairsched.c``, after Goyal et al.,
SIGCOMM 96). Each container (VE) has a ``weight = 500000 // cpuunits`` (inverse: more
cpuunits, slower-growing tag) and a **start tag**; after running ``d`` µs its tag grows by
``d * weight``. The runnable VE with the smallest tag runs, and keeps the CPU for a timeslice
(``FSCH_TIMESLICE``, 16 ms) or until it has no work. Virtual time is the smallest tag among
runnable VEs. A VE that wakes starts at ``max(tag, virtual time)`` (no credit for sleeping), and
no tag may run more than ``max_latency = timeslice x cpus x fairsched_max_latency x
min_weight`` ahead of virtual time, which bounds the penalty of a heavy user. Waking work in
another VE does not preempt: the running VE keeps the CPU until its timeslice ends (the second
level, the standard Linux scheduler inside each VE, is first come first served here).

**cpulimit** is a token bucket in CPU time: ``value`` grows at ``rate = cpulimit / 100`` CPUs
up to ``timeslice x (cpus + 1)``; a VE may be picked only with at least one timeslice of
value (otherwise it is *delayed* until ``(timeslice - value) / rate`` later) and pays for what
it runs. The long-run share of a limited VE is at most ``cpulimit`` % of a CPU.

States of a VE: *asleep*, *runnable*, *running*, *delayed* (cpulimit bucket below one
timeslice). Invariants: tags never decrease; ``value <= timeslice x (cpus + 1)``.
"""

from __future__ import annotations

from typing import Any

from virtlab.sched.base import Node, Policy
from virtlab.sched.params import GuestSchedParams

__all__ = ["OpenVzPolicy", "OvzVe", "MAX_CPUUNITS_WEIGHT"]

#: ``weight = 500000 / cpuunits`` (vzctl; FSCHWEIGHT_BASE comment in fairsched.h, S42).
MAX_CPUUNITS_WEIGHT = 500000


class OvzVe(Node):
    """An OpenVZ container's fair-scheduler node (see the module docstring)."""

    __slots__ = ("weight", "tag", "rate", "value_us", "last_update_us", "delayed",
                 "delayed_at", "delays", "delayed_us")

    def __init__(self, name: str, policy: Policy, limit: float, sched: GuestSchedParams,
                 max_value_us: float) -> None:
        super().__init__(name, policy, limit=limit)
        self.weight = max(1, MAX_CPUUNITS_WEIGHT // sched.openvz_cpuunits)
        self.tag = 0.0
        self.rate = sched.openvz_cpulimit_pct / 100.0  # CPUs; 0 = not limited
        self.value_us = max_value_us
        self.last_update_us = 0.0
        self.delayed = False
        self.delayed_at = 0.0
        self.delays = 0
        self.delayed_us = 0.0


class OpenVzPolicy(Policy):
    """fairsched: start tags weighted by cpuunits, a cpulimit token bucket."""

    name = "openvz"

    def __init__(self, params: Any, cores: int) -> None:
        super().__init__(params, cores)
        self.timeslice_us = params.openvz_timeslice_us
        self.max_value_us = self.timeslice_us * (cores + 1)

    def _make(self, name: str, sched: GuestSchedParams, cpus: int, limit: float) -> Node:
        return OvzVe(name, self, limit, sched, self.max_value_us)

    def _virtual_time(self, skip: Node | None = None) -> float | None:
        tags = [n.tag for n in self.nodes if n.active > 0 and n is not skip]  # type: ignore[attr-defined]
        return min(tags) if tags else None

    def _max_latency(self) -> float:
        min_weight = min(n.weight for n in self.nodes)  # type: ignore[attr-defined]
        return (self.timeslice_us * self.cores * self.params.openvz_max_latency_timeslices
                * min_weight)

    def _clamp(self, ve: OvzVe, virtual_time: float | None) -> None:
        if virtual_time is not None:
            ve.tag = min(ve.tag, virtual_time + self._max_latency())

    def _refill(self, ve: OvzVe, now: float) -> None:
        ve.value_us = min(self.max_value_us, ve.value_us + (now - ve.last_update_us) * ve.rate)
        ve.last_update_us = now

    # Questions ---------------------------------------------------------------------------------
    def eligible(self, node: Node, now: float) -> bool:
        """Not while delayed by cpulimit (less than a timeslice of credit)."""
        assert isinstance(node, OvzVe)
        if node.rate == 0.0:
            return True
        self._refill(node, now)
        if node.value_us >= self.timeslice_us:
            if node.delayed:
                node.delayed = False
                node.delayed_us += now - node.delayed_at
            return True
        if not node.delayed:
            node.delayed = True
            node.delayed_at = now
            node.delays += 1
            self.trace(node, "sched", "cpulimit: delayed until a timeslice of credit accrues")
        return False

    def release_at_us(self, node: Node, now: float) -> float:
        """When the cpulimit bucket holds a timeslice again."""
        assert isinstance(node, OvzVe)
        self._refill(node, now)
        return now + (self.timeslice_us - node.value_us) / node.rate

    def key(self, node: Node, head_seq: int, now: float) -> tuple[Any, ...]:
        """Smallest start tag first."""
        return (node.tag, head_seq)  # type: ignore[attr-defined]

    def quantum_us(self, node: Node, core: int, now: float) -> float:
        """A timeslice."""
        return self.timeslice_us

    # Reports -----------------------------------------------------------------------------------
    def on_wake(self, node: Node, now: float) -> None:
        """No credit for sleeping: start at virtual time at least."""
        assert isinstance(node, OvzVe)
        virtual_time = self._virtual_time(skip=node)
        if virtual_time is not None and virtual_time > node.tag:
            node.tag = virtual_time
        self._clamp(node, virtual_time)

    def stop(self, node: Node, core: int, ran_us: float, start_us: float, now: float) -> None:
        """Advance the start tag by weight x time; pay the cpulimit bucket."""
        assert isinstance(node, OvzVe)
        node.tag += ran_us * node.weight
        self._clamp(node, self._virtual_time(skip=node))
        if node.rate > 0.0:
            self._refill(node, now)
            node.value_us -= ran_us

    def stats(self, node: Node) -> dict[str, float]:
        """Weight, start tag and cpulimit counters."""
        assert isinstance(node, OvzVe)
        return {"weight": float(node.weight), "start_tag": node.tag,
                "cpulimit_value_us": node.value_us, "delays": float(node.delays),
                "delayed_us": node.delayed_us}
