"""The dispatcher: who runs on the host's cores, under a hierarchy of scheduling policies.

Work arrives as **jobs** on **leaves**. A leaf is where a context's work queues (a guest's
vCPUs, a container's tasks, dom0's backends, the host kernel); its ``chain`` lists the nodes
above it from the root, e.g. ``(dom0, container-a)`` under a credit hypervisor, so each level's
policy decides among its own nodes. Two kinds of job:

* **short, non-preemptible** work (every step of an I/O path, :meth:`Dispatcher.acquire`): once
  on a core it runs to the end, as kernel paths and exits do;
* **CPU-bound, preemptible** work (a busy loop, :meth:`Dispatcher.compute`): it runs in quanta
  the policies size, is re-queued when a quantum ends, and a woken leaf may preempt it.

Time-slicing only CPU-bound work keeps proportional sharing exact over long windows while the
number of events stays small: a 3 ms quantum costs one event per core every 3 ms. Waiting work
and the policies' choice among it live in :mod:`virtlab.sched.runqueue`; this module owns the
cores and *when* each decision is taken.

States of a core: *idle*; *busy* with a stint of one leaf, running short work or a quantum of
CPU-bound work; *grace*: CPU-bound work just finished and its leaf may continue the stint at
the same instant (a busy loop's next chunk), so that chunk boundaries are invisible to the
policies; *limbo*: free while work waits, to be given away once every event of the current
instant has run (so work that arrives at the same instant competes too). Invariants: at the
end of every instant a core is idle only if no waiting leaf may start (work conservation,
except while policies hold leaves back); a leaf's jobs start in arrival order; a node never
runs on more than ``limit`` cores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import simpy
from simpy.events import Event

from virtlab.sched.base import INF, Node, Policy
from virtlab.sched.runqueue import RunQueue, preempt_delay_us
from virtlab.sched.work import MIN_QUANTUM_US, Core, Job, Leaf, SchedRecorder
from virtlab.trace import NullTracer, Tracer

__all__ = ["Dispatcher", "Leaf", "Core", "Job", "SchedRecorder"]

#: Shortest timer delay: below it a decision is due now (a float ``now + 1e-13`` would be
#: ``now`` again late in a run, and a timer loop at one instant would never end).
_MIN_DELAY_US = 1e-6
_EPS = 1e-9


class Dispatcher:
    """The host's cores under a hierarchy of policies (one per level).

    Parameters
    ----------
    env:
        The SimPy environment.
    cores:
        Number of physical cores.
    tracer:
        Receives ``sched`` events (preemptions, throttling) when enabled.

    """

    def __init__(self, env: simpy.Environment, cores: int, tracer: Tracer | None = None) -> None:
        self.env = env
        self.cores = [Core(i) for i in range(cores)]
        self._idle = list(reversed(self.cores))  # pop() hands out core 0 first
        self._limbo: list[Core] = []  # free cores waiting for the end of the instant
        self._settling = False
        self.runqueue = RunQueue()
        self._release_armed = INF
        self._recheck_armed = INF
        self.policies: list[Policy] = []
        self.nodes: list[Node] = []
        self.tracer: Tracer = tracer if tracer is not None else NullTracer()
        self.recorder: SchedRecorder | None = None
        self.preemptions = 0
        self.started = False
        #: Per-CPU run queues: leaves may have an ``affinity``; routers send jobs to a core.
        self.per_cpu = False
        #: Called with a router and the time when its per-core activity changes.
        self.on_activity: Callable[[Leaf, float], None] | None = None

    # Wiring ------------------------------------------------------------------------------------
    def add_policy(self, policy: Policy) -> Policy:
        """Register a policy (its timers start with :meth:`start`)."""
        self.policies.append(policy)
        if self.started:
            policy.attach(self)
        return policy

    def add_node(self, node: Node) -> Node:
        """Register a node for reports."""
        self.nodes.append(node)
        return node

    def start(self) -> None:
        """Start the policies' timers (after every node is wired)."""
        self.started = True
        for policy in self.policies:
            policy.attach(self)

    def trace(self, scope: str, kind: str, detail: str) -> None:
        """Emit a trace event now if tracing is on."""
        if self.tracer.enabled:
            self.tracer.emit(self.env.now, scope, kind, -1, detail)

    # Entry points ------------------------------------------------------------------------------
    def acquire(self, leaf: Leaf) -> Core | Event:
        """Short work of ``leaf`` wants a core: the core now, or an event whose value is it.

        The caller holds the core for the work's duration and then calls :meth:`finish`.
        """
        now = self.env.now
        if leaf.homes is not None:
            leaf = self._route(leaf, now)
        self._activate(leaf, now)
        core = leaf.grace_core
        if core is not None:
            self._reclaim(core, leaf, None, now)
            return core
        if self._idle and not leaf.queue and self.runqueue.startable(leaf, now):
            core = self._take_idle(leaf)
            if core is not None:
                self._begin(core, leaf, None, now)
                return core
        job = Job(leaf, 0.0, self.env.event(), False)
        self.runqueue.push(leaf, job, now)
        self._reschedule(now)
        return job.event

    def finish(self, core: Core) -> None:
        """The short work holding ``core`` is done."""
        now = self.env.now
        leaf = core.leaf
        assert leaf is not None
        self._stop(core, now)
        self._deactivate(leaf, now)
        self._dispatch(core, now)

    def compute(self, leaf: Leaf, work_us: float) -> Event:
        """CPU-bound work of ``leaf``; the returned event fires when ``work_us`` has run."""
        now = self.env.now
        if leaf.homes is not None:
            leaf = self._route(leaf, now)
        self._activate(leaf, now)
        job = Job(leaf, work_us, self.env.event(), True)
        core = leaf.grace_core
        if core is not None:
            self._reclaim(core, leaf, job, now)
            return job.event
        if self._idle and not leaf.queue and self.runqueue.startable(leaf, now):
            core = self._take_idle(leaf)
            if core is not None:
                self._begin(core, leaf, job, now)
                return job.event
        self.runqueue.push(leaf, job, now)
        self._reschedule(now)
        return job.event

    def reschedule(self) -> None:
        """Re-decide now (policies call this when a period refills or a cap lifts)."""
        self._reschedule(self.env.now)

    # Accounting --------------------------------------------------------------------------------
    def usage_us(self, node: Node, now: float) -> float:
        """Core time of ``node`` up to ``now``, including stints still running."""
        total = node.cpu_us
        for core in self.cores:
            if core.leaf is not None and node in core.leaf.chain:
                total += now - core.stint_start_us
        return total

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Every node's core time and policy counters at this instant."""
        now = self.env.now
        out = {}
        for node in self.nodes:
            row = {"cpu_us": self.usage_us(node, now)}
            if node.policy is not None:
                row.update(node.policy.stats(node))
            out[node.name] = row
        return out

    # Internals: activity along the chain -------------------------------------------------------
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

    # Internals: per-CPU run queues -------------------------------------------------------------
    def _take_idle(self, leaf: Leaf) -> Core | None:
        """An idle core ``leaf`` may run on, taken out of the idle list (None: not idle)."""
        if leaf.affinity is None:
            return self._idle.pop()
        for core in self._idle:
            if core.index == leaf.affinity:
                self._idle.remove(core)
                return core
        return None

    def _route(self, router: Leaf, now: float) -> Leaf:
        """The per-core leaf a new job of ``router`` joins (wake-up placement).

        A busy loop's next chunk stays where it ran (its grace core); other work goes to the
        core with the fewest jobs running or queued on it, the lowest-numbered on a tie (a
        simplification of ``select_task_rq_fair``'s idle-sibling and wake-affine choice).
        """
        assert router.homes is not None
        core = router.grace_core
        if core is not None:
            return router.homes[core.index]
        loads = [0 if core.leaf is None else 1 for core in self.cores]
        for leaf in self.runqueue.leaves:
            if leaf.affinity is not None:
                loads[leaf.affinity] += len(leaf.queue)
        best = min(range(len(loads)), key=lambda index: (loads[index], index))
        return router.homes[best]

    def _pull_candidate(self, core: Core, now: float) -> Leaf | None:
        """A waiting per-core leaf elsewhere whose work could start on ``core`` (idle balance).

        The kernel's ``newidle_balance`` pulls from the busiest CPU: here the leaf on the core
        with the most queued jobs, the earliest waiting on a tie.
        """
        best, best_load = None, 0
        loads: dict[int, int] = {}
        for leaf in self.runqueue.leaves:
            if leaf.affinity is not None:
                loads[leaf.affinity] = loads.get(leaf.affinity, 0) + len(leaf.queue)
        for leaf in self.runqueue.leaves:
            router = leaf.router
            if router is None or router.homes is None or leaf.affinity == core.index:
                continue
            target = router.homes[core.index]
            if target.queue or not self.runqueue.startable(target, now):
                continue
            if not self.runqueue.startable(leaf, now):
                continue  # throttled or held where it is: not runnable, not pulled
            load = loads[leaf.affinity]  # type: ignore[index]
            if best is None or load > best_load:
                best, best_load = leaf, load
        return best

    def _pull(self, core: Core, now: float) -> Leaf | None:
        """Move the oldest job of the best pull candidate to ``core``'s leaf of its group."""
        source = self._pull_candidate(core, now)
        if source is None:
            return None
        assert source.router is not None and source.router.homes is not None
        target = source.router.homes[core.index]
        job = self.runqueue.pop(source)
        self._activate(target, now)  # first: the group's node above both stays active
        self._deactivate(source, now)
        seq, enqueued = job.seq, job.enqueued_us
        job.leaf = target
        self.runqueue.push(target, job, now)
        job.seq, job.enqueued_us = seq, enqueued
        self.trace(source.name, "sched", f"migrated to core {core.index} (idle balance)")
        return target

    def _fill_per_cpu(self, now: float) -> None:
        """Give each idle core work from its own queue, else pull some from another's."""
        progress = True
        while progress and self._idle:
            progress = False
            for core in sorted(self._idle, key=lambda c: c.index):
                leaf = self.runqueue.pick(now, core.index)
                if leaf is None and self._idle_hooks(now):
                    leaf = self.runqueue.pick(now, core.index)
                if leaf is None:
                    leaf = self._pull(core, now)
                if leaf is None:
                    continue
                self._idle.remove(core)
                self._begin(core, leaf, self.runqueue.pop(leaf), now)
                progress = True

    def _set_grace(self, leaf: Leaf, core: Core | None) -> None:
        """Mark (or, with None, clear) the core ``leaf`` may continue its stint on."""
        old = leaf.grace_core
        leaf.grace_core = core
        router = leaf.router
        if router is not None and (core is not None or router.grace_core is old):
            router.grace_core = core

    # Internals: cores --------------------------------------------------------------------------
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
        now = self.env.now
        leaf = core.leaf
        assert leaf is not None
        self._set_grace(leaf, None)
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

    def _dispatch(self, core: Core, now: float) -> None:
        """A core became free: decide who gets it once this instant's work has arrived.

        Work often continues at the same instant in another context (a softirq hands a packet
        to a backend, which interrupts the guest); deciding at once would hand the core to a
        waiting CPU hog a moment before that work arrives. So the core waits *in limbo* until
        no other event is due at this instant, then everyone who arrived competes.
        """
        if not self.runqueue.leaves:
            self._idle.append(core)
            return
        self._limbo.append(core)
        if not self._settling:
            self._settling = True
            self._after(0.0, self._settle)

    def _settle(self) -> None:
        env = self.env
        now = env.now
        if env.peek() <= now:
            self._after(0.0, self._settle)  # more work may arrive at this instant
            return
        self._settling = False
        self._idle.extend(self._limbo)
        self._limbo.clear()
        self._reschedule(now)

    def _reschedule(self, now: float) -> None:
        if self._limbo:
            return  # the pending settle decides, with everything that arrives meanwhile
        if self.per_cpu:
            self._fill_per_cpu(now)
        while self._idle and not self.per_cpu:
            leaf = self.runqueue.pick(now)
            if leaf is None and self._idle_hooks(now):
                leaf = self.runqueue.pick(now)
            if leaf is None:
                break
            self._begin(self._idle.pop(), leaf, self.runqueue.pop(leaf), now)
        if not self._idle:
            # Only freshly woken (short) work preempts; CPU-bound work waits for a quantum end.
            startable = self.runqueue.startable
            woken = [leaf for leaf in self.runqueue.leaves
                     if not leaf.queue[0].preemptible and startable(leaf, now)]
            groups: dict[int | None, list[Leaf]] = {None: woken}
            if self.per_cpu:  # each core's queue decides for that core only
                groups = {}
                for leaf in woken:
                    groups.setdefault(leaf.affinity, []).append(leaf)
            for group in groups.values():
                while group and self._try_preempt(group, now):
                    group = [leaf for leaf in group if leaf.waiting and startable(leaf, now)]
        self._arm_release(now)

    def _idle_hooks(self, now: float) -> bool:
        """A core would idle: policies holding waiting nodes back may let one go now."""
        held = self.runqueue.held(now)
        return any(policy.on_idle(nodes, now) for policy, nodes in held.items())

    def _try_preempt(self, woken: list[Leaf], now: float) -> bool:
        """Let the best woken leaf preempt CPU-bound work; True if it did."""
        best = self.runqueue.best(woken, now)
        assert best is not None
        soonest, soonest_delay = None, INF
        for core in self.cores:
            if core.job is None and not core.grace:
                continue  # idle or running short work
            if best.affinity is not None and core.index != best.affinity:
                continue  # per-CPU run queues: only the waker's own core
            assert core.leaf is not None
            delay = preempt_delay_us(best, core.leaf, now - core.stint_start_us, now)
            if delay is None:
                continue
            if delay <= _MIN_DELAY_US:
                self._preempt(core, best, now)
                return True
            if delay < soonest_delay:
                soonest, soonest_delay = core, delay
        if soonest is not None and now + soonest_delay < self._recheck_armed:
            self._recheck_armed = now + soonest_delay
            self._after(soonest_delay, self._recheck)
        return False

    def _recheck(self) -> None:
        self._recheck_armed = INF
        self._reschedule(self.env.now)

    def _preempt(self, core: Core, leaf: Leaf, now: float) -> None:
        loser = core.leaf
        assert loser is not None
        self.trace(loser.name, "sched", f"preempted on core {core.index} by {leaf.name}")
        self.preemptions += 1
        victim = core.job
        if victim is None:  # in grace: the CPU-bound leaf's next work will have to queue
            self._set_grace(loser, None)
            self._stop(core, now)
            self._deactivate(loser, now)
        else:
            victim.remaining_us -= now - core.job_start_us
            self._stop(core, now)
            self.runqueue.push(loser, victim, now, front=True)
        self._begin(core, leaf, self.runqueue.pop(leaf), now)

    def _arm_release(self, now: float) -> None:
        soonest = self.runqueue.release_at_us(now)
        if soonest < self._release_armed:
            self._release_armed = soonest
            self._after(max(soonest - now, _MIN_DELAY_US), self._release)

    def _release(self) -> None:
        if self.env.now >= self._release_armed - _MIN_DELAY_US:
            self._release_armed = INF
        self._reschedule(self.env.now)

    # Checks ------------------------------------------------------------------------------------
    def check(self) -> None:
        """Assert the invariants of the module docstring (for tests)."""
        busy = [c for c in self.cores if c.leaf is not None]
        assert len(busy) + len(self._idle) + len(self._limbo) == len(self.cores)
        for node in self.nodes:
            running = sum(node in c.leaf.chain for c in busy if c.leaf is not None)
            assert running == node.running <= node.limit, (node.name, running, node.running)
        if self._idle:
            now = self.env.now
            if self.per_cpu:
                for core in self._idle:
                    assert self.runqueue.pick(now, core.index) is None, core.index
                    assert self._pull_candidate(core, now) is None, core.index
            else:
                assert not any(self.runqueue.startable(leaf, now)
                               for leaf in self.runqueue.leaves)
