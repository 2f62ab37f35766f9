"""A core's stint: one leaf's run on one core, from its start to its stop.

A stint begins when the dispatcher gives a core to a leaf and ends when the core is free again.
Short work holds it to the end; CPU-bound work runs in quanta the policies size (the minimum
over the chain's policies, at least :data:`~virtlab.sched.work.MIN_QUANTUM_US`), and a quantum
that ends with work left re-queues the job at the front of its leaf. When CPU-bound work
finishes, the core enters *grace* for the rest of the instant: the same leaf may reclaim it
with new work (a busy loop's next chunk), so chunk boundaries are invisible to the policies.

Every stint is accounted along the leaf's chain: ``running`` and ``cpu_us`` of each node, the
policies' ``start``/``stop`` hooks, and the nodes' activity (``active``: jobs queued or
running below a node, which wakes and sleeps its policy). :class:`CoreStints` holds this
mechanism; :class:`~virtlab.sched.dispatch.Dispatcher` decides who gets a free core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import simpy

from virtlab.sched.base import INF, Node
from virtlab.sched.runqueue import RunQueue
from virtlab.sched.work import MIN_QUANTUM_US, Core, Job, Leaf, SchedRecorder

__all__ = ["CoreStints"]

#: Work left below this is done (float residue of subtracting elapsed time).
_EPS = 1e-9


class CoreStints:
    """The cores' stints and their accounting along the chains (base of the dispatcher).

    Invariants: a busy core's ``stint_start_us`` is when its leaf began the stint; each node's
    ``running`` counts the cores whose leaf has it in its chain; a core's ``token`` changes
    whenever a timer it armed becomes stale (so a stale slice or grace end does nothing).
    Subclasses decide what a freed core does next (:meth:`_dispatch`).
    """

    def __init__(self, env: simpy.Environment, cores: int) -> None:
        self.env = env
        self.cores = [Core(i) for i in range(cores)]
        self.runqueue = RunQueue()
        self.recorder: SchedRecorder | None = None
        #: Called with a router and the time when its per-core activity changes.
        self.on_activity: Callable[[Leaf, float], None] | None = None

    def usage_us(self, node: Node, now: float) -> float:
        """Core time of ``node`` up to ``now``, including stints still running."""
        total = node.cpu_us
        for core in self.cores:
            if core.leaf is not None and node in core.leaf.chain:
                total += now - core.stint_start_us
        return total

    def _dispatch(self, core: Core, now: float) -> None:
        """``core`` became free: decide who gets it (the dispatcher's policy)."""
        raise NotImplementedError

    # Activity along the chain ------------------------------------------------------------------
    def _activate(self, leaf: Leaf, now: float) -> None:
        for node in leaf.chain:
            if node.active == 0 and node.policy is not None:
                node.policy.on_wake(node, now)
            node.active += 1
            if node.active > node.peak_active:
                node.peak_active = node.active
        if leaf.router is not None and self.on_activity is not None:
            self.on_activity(leaf.router, now)

    def _deactivate(self, leaf: Leaf, now: float) -> None:
        for node in leaf.chain:
            node.active -= 1
            if node.active == 0 and node.policy is not None:
                node.policy.on_sleep(node, now)
        if leaf.router is not None and self.on_activity is not None:
            self.on_activity(leaf.router, now)

    def _set_grace(self, leaf: Leaf, core: Core | None) -> None:
        """Mark (or, with None, clear) the core ``leaf`` may continue its stint on."""
        old = leaf.grace_core
        leaf.grace_core = core
        router = leaf.router
        if router is not None and (core is not None or router.grace_core is old):
            router.grace_core = core

    # Stints ------------------------------------------------------------------------------------
    def _begin(self, core: Core, leaf: Leaf, job: Job | None, now: float) -> None:
        core.leaf = leaf
        core.grace = False
        core.stint_start_us = now
        for node in leaf.chain:
            node.running += 1
            if node.policy is not None:
                node.policy.start(node, core.index, now)
        if job is not None and self.recorder is not None and job.enqueued_us < now:
            self.recorder.waits.append((leaf.name, job.enqueued_us, now))
        if job is None or not job.preemptible:
            core.job = None
            if job is not None:
                job.event.succeed(core)
            return
        core.job = job
        core.job_start_us = now
        quantum = INF
        for node in leaf.chain:
            if node.policy is not None:
                quantum = min(quantum, node.policy.quantum_us(node, core.index, now))
        core.quantum_end_us = now + max(quantum, MIN_QUANTUM_US)
        self._arm_slice(core, now)

    def _arm_slice(self, core: Core, now: float) -> None:
        job = core.job
        assert job is not None
        end = min(core.quantum_end_us, now + job.remaining_us)
        core.token += 1
        self._after(end - now, self._slice_end, core, core.token)

    def _after(self, delay_us: float, callback: Callable[..., None], *args: Any) -> None:
        event = self.env.timeout(max(delay_us, 0.0))
        event.callbacks.append(lambda _event: callback(*args))

    def _slice_end(self, core: Core, token: int) -> None:
        if core.token != token:
            return  # preempted meanwhile
        now = self.env.now
        job = core.job
        assert job is not None
        job.remaining_us -= now - core.job_start_us
        core.job_start_us = now
        leaf = job.leaf
        if job.remaining_us <= _EPS:
            # Done: keep the stint for one instant in case the leaf continues (next chunk).
            core.job = None
            core.grace = True
            self._set_grace(leaf, core)
            core.token += 1
            # The job's event first: its process resumes (and may reclaim the core) before
            # the grace end, scheduled after it at the same instant, is processed.
            job.event.succeed()
            self._after(0.0, self._grace_end, core, core.token)
            return
        self._stop(core, now)
        self.runqueue.push(leaf, job, now, front=True)  # a new sequence number: back of the round
        self._dispatch(core, now)

    def _grace_end(self, core: Core, token: int) -> None:
        if core.token != token or not core.grace:
            return
        leaf = core.leaf
        assert leaf is not None
        self._set_grace(leaf, None)
        self._end_stint(core, self.env.now)

    def _end_stint(self, core: Core, now: float) -> None:
        """The work holding ``core`` is done and its leaf does not continue: free the core."""
        leaf = core.leaf
        assert leaf is not None
        self._stop(core, now)
        self._deactivate(leaf, now)
        self._dispatch(core, now)

    def _reclaim(self, core: Core, leaf: Leaf, job: Job | None, now: float) -> None:
        """``leaf`` continues its stint on its grace core with new work."""
        self._set_grace(leaf, None)
        core.grace = False
        core.token += 1  # cancels the pending grace end
        for node in leaf.chain:
            node.active -= 1  # the finished job; the new one keeps the node active
        if leaf.router is not None and self.on_activity is not None:
            self.on_activity(leaf.router, now)
        core.job = job
        if job is not None:
            core.job_start_us = now
            self._arm_slice(core, now)

    def _stop(self, core: Core, now: float) -> None:
        leaf = core.leaf
        assert leaf is not None
        start = core.stint_start_us
        ran = now - start
        for node in leaf.chain:
            node.running -= 1
            node.cpu_us += ran
            if node.policy is not None:
                node.policy.stop(node, core.index, ran, start, now)
        if self.recorder is not None and ran > 0.0:
            self.recorder.runs.append((leaf.name, core.index, start, now))
        core.leaf = None
        core.job = None
        core.grace = False
        core.token += 1
