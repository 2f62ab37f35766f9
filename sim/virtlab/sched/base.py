"""What every scheduling policy provides, and the simplest one (first come, first served).

A **policy** decides among **nodes**, the schedulable entities of one level: cgroups (CFS),
VServer contexts, OpenVZ containers, Xen domains. The :class:`~virtlab.sched.dispatch.Dispatcher`
owns the cores and the queues of work and asks the policy four questions: may this node run now
(:meth:`Policy.eligible`), which of the runnable nodes goes first (:meth:`Policy.key`), how long
may CPU-bound work run before the next decision (:meth:`Policy.quantum_us`), and does a node
with freshly woken work preempt a running one (:meth:`Policy.preempt_delay_us`). It reports
back what ran (:meth:`Policy.start`, :meth:`Policy.stop`) and when a node's work appears or
drains (:meth:`Policy.on_wake`, :meth:`Policy.on_sleep`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from virtlab.sched.params import GuestSchedParams, SchedulerParams

if TYPE_CHECKING:
    from virtlab.sched.dispatch import Dispatcher

__all__ = ["Node", "Policy", "FifoPolicy", "INF"]

INF = math.inf


class Node:
    """A schedulable entity at one level of the hierarchy.

    States: *asleep* (``active == 0``), *runnable* (work queued, none running), *running* on
    ``running`` cores. Invariants, kept by the dispatcher: ``0 <= running <= limit``;
    ``running <= active``; ``cpu_us`` is the core time of finished stints (see
    :meth:`~virtlab.sched.dispatch.Dispatcher.usage_us` for the time including running ones).
    A *kernel* node (interrupt and softirq work) has no policy: it always runs first, is never
    limited and preempts CPU-bound work at once.
    """

    __slots__ = ("name", "policy", "kernel", "limit", "running", "active", "peak_active",
                 "cpu_us")

    def __init__(self, name: str, policy: Policy | None, *, limit: float = INF,
                 kernel: bool = False) -> None:
        self.name = name
        self.policy = policy
        self.kernel = kernel
        self.limit = limit
        self.running = 0
        self.active = 0
        self.peak_active = 0
        self.cpu_us = 0.0


class Policy:
    """Base policy: work-conserving, unlimited, first come first served, never preempts.

    Subclasses override what their scheduler does differently. Keys are tuples compared
    lexicographically; ``head_seq`` (the arrival order of the node's oldest waiting work) is the
    final tie-breaker, which makes equal keys first-come-first-served and lets a CPU-bound node
    that used up its quantum go to the back (it is re-queued with a new sequence number).
    """

    name = "fifo"

    def __init__(self, params: SchedulerParams, cores: int) -> None:
        self.params = params
        self.cores = cores
        self.nodes: list[Node] = []
        self.dispatcher: Dispatcher | None = None

    # Wiring -----------------------------------------------------------------------------------
    def new_node(self, name: str, sched: GuestSchedParams, *, cpus: int,
                 limit: float = INF) -> Node:
        """Create the node of a guest (``cpus``: its vCPUs or the CPUs it may use)."""
        node = self._make(name, sched, cpus, limit)
        self.nodes.append(node)
        if self.dispatcher is not None:
            self._started(node)
        return node

    def _make(self, name: str, sched: GuestSchedParams, cpus: int, limit: float) -> Node:
        return Node(name, self, limit=limit)

    def attach(self, dispatcher: Dispatcher) -> None:
        """Called once when the run starts: start periodic timers."""
        self.dispatcher = dispatcher
        for node in self.nodes:
            self._started(node)

    def _started(self, node: Node) -> None:
        """Start the per-node timers of ``node`` (after :meth:`attach`)."""

    # Questions --------------------------------------------------------------------------------
    def eligible(self, node: Node, now: float) -> bool:
        """Whether ``node`` may start work now (not while throttled, held, delayed, parked)."""
        return True

    def release_at_us(self, node: Node, now: float) -> float:
        """When an ineligible node becomes eligible; INF if a policy timer will say so."""
        return INF

    def key(self, node: Node, head_seq: int, now: float) -> tuple[Any, ...]:
        """Order of runnable nodes: the smallest key runs first."""
        return (head_seq,)

    def quantum_us(self, node: Node, core: int, now: float) -> float:
        """How long CPU-bound work of ``node`` may run on ``core`` before the next decision."""
        return INF

    def preempt_delay_us(self, waker: Node, running: Node, stint_us: float,
                         now: float) -> float | None:
        """Whether freshly woken work of ``waker`` preempts CPU-bound ``running``.

        ``None``: no; ``0``: now; a positive value: not before that much longer.
        """
        return None

    def on_idle(self, nodes: list[Node], now: float) -> bool:
        """A core is about to idle while ``nodes`` wait ineligible; True if one became eligible."""
        return False

    # Reports ----------------------------------------------------------------------------------
    def on_wake(self, node: Node, now: float) -> None:
        """``node`` had no work and now has some."""

    def on_sleep(self, node: Node, now: float) -> None:
        """``node``'s last work finished."""

    def start(self, node: Node, core: int, now: float) -> None:
        """``node`` starts a stint on ``core``."""

    def stop(self, node: Node, core: int, ran_us: float, start_us: float, now: float) -> None:
        """``node``'s stint on ``core`` ended after ``ran_us`` (begun at ``start_us``)."""

    def stats(self, node: Node) -> dict[str, float]:
        """Counters of ``node`` for reports (cumulative since the start of the run)."""
        return {}

    def trace(self, node: Node, kind: str, detail: str) -> None:
        """Emit a scheduler trace event for ``node`` if tracing is on."""
        if self.dispatcher is not None:
            self.dispatcher.trace(node.name, kind, detail)


class FifoPolicy(Policy):
    """First come, first served, run to completion: the foundation's core pool as a policy.

    Used inside dom0 under a credit hypervisor when ``[scheduler] host = "fifo"``; at the top
    level a FIFO host keeps the foundation's fast path and needs no dispatcher at all.
    """

    name = "fifo"
