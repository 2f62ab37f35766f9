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
and the policies' choice among it live in :mod:`virtlab.sched.runqueue`, a stint on a core (its
quanta, grace and accounting) in :mod:`virtlab.sched.stints`, and the per-CPU run queues'
placement choices in :mod:`virtlab.sched.placement`; this module decides *when* a free core is
given away and to whom, and when woken work preempts.

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

import simpy
from simpy.events import Event

from virtlab.sched.base import INF, Node, Policy
from virtlab.sched.placement import pull_candidate, route, take_idle
from virtlab.sched.runqueue import preempt_delay_us
from virtlab.sched.stints import CoreStints
from virtlab.sched.work import Core, Job, Leaf, SchedRecorder
from virtlab.trace import NullTracer, Tracer

__all__ = ["Dispatcher", "Leaf", "Core", "Job", "SchedRecorder"]

#: Shortest timer delay: below it a decision is due now (a float ``now + 1e-13`` would be
#: ``now`` again late in a run, and a timer loop at one instant would never end).
_MIN_DELAY_US = 1e-6


class Dispatcher(CoreStints):
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
        super().__init__(env, cores)
        self._idle = list(reversed(self.cores))  # pop() hands out core 0 first
        self._limbo: list[Core] = []  # free cores waiting for the end of the instant
        self._settling = False
        self._release_armed = INF
        self._recheck_armed = INF
        self.policies: list[Policy] = []
        self.nodes: list[Node] = []
        self.tracer: Tracer = tracer if tracer is not None else NullTracer()
        self.preemptions = 0
        self.started = False
        #: Per-CPU run queues: leaves may have an ``affinity``; routers send jobs to a core.
        self.per_cpu = False

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
            leaf = route(leaf, self.cores, self.runqueue)
        self._activate(leaf, now)
        core = leaf.grace_core
        if core is not None:
            self._reclaim(core, leaf, None, now)
            return core
        if self._idle and not leaf.queue and self.runqueue.startable(leaf, now):
            core = take_idle(self._idle, leaf)
            if core is not None:
                self._begin(core, leaf, None, now)
                return core
        job = Job(leaf, 0.0, self.env.event(), False)
        self.runqueue.push(leaf, job, now)
        self._reschedule(now)
        return job.event

    def finish(self, core: Core) -> None:
        """The short work holding ``core`` is done."""
        self._end_stint(core, self.env.now)

    def compute(self, leaf: Leaf, work_us: float) -> Event:
        """CPU-bound work of ``leaf``; the returned event fires when ``work_us`` has run."""
        now = self.env.now
        if leaf.homes is not None:
            leaf = route(leaf, self.cores, self.runqueue)
        self._activate(leaf, now)
        job = Job(leaf, work_us, self.env.event(), True)
        core = leaf.grace_core
        if core is not None:
            self._reclaim(core, leaf, job, now)
            return job.event
        if self._idle and not leaf.queue and self.runqueue.startable(leaf, now):
            core = take_idle(self._idle, leaf)
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

    # Internals: per-CPU run queues (the choices are :mod:`virtlab.sched.placement`'s) ---------
    def _pull(self, core: Core, now: float) -> Leaf | None:
        """Move the oldest job of the best pull candidate to ``core``'s leaf of its group."""
        source = pull_candidate(core, self.runqueue, now)
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
                    assert pull_candidate(core, self.runqueue, now) is None, core.index
            else:
                assert not any(self.runqueue.startable(leaf, now)
                               for leaf in self.runqueue.leaves)
