"""Per-CPU run queues: which core's queue new work joins, and what an idle core pulls.

With per-CPU run queues (``Dispatcher.per_cpu``) a context's leaf is a *router*: ``homes[c]``
is its leaf on core ``c``. The kernel decides placement twice, and these functions make the
two choices without changing any state (the dispatcher moves the work):

* **wake-up placement** (:func:`route`): the core a new job of a router goes to;
* **idle balance** (:func:`pull_candidate`): a waiting leaf on another core whose oldest job an
  idle core may take over.

:func:`take_idle` is the affinity rule for idle cores: a leaf pinned to a core may start only
there.
"""

from __future__ import annotations

from virtlab.sched.runqueue import RunQueue
from virtlab.sched.work import Core, Leaf

__all__ = ["route", "pull_candidate", "take_idle"]


def take_idle(idle: list[Core], leaf: Leaf) -> Core | None:
    """An idle core ``leaf`` may run on, taken out of ``idle`` (None: its core is not idle).

    Without affinity, the last core of ``idle`` (the dispatcher keeps it so that core 0 is
    handed out first).
    """
    if leaf.affinity is None:
        return idle.pop()
    for core in idle:
        if core.index == leaf.affinity:
            idle.remove(core)
            return core
    return None


def route(router: Leaf, cores: list[Core], runqueue: RunQueue) -> Leaf:
    """The per-core leaf a new job of ``router`` joins (wake-up placement).

    A busy loop's next chunk stays where it ran (its grace core); other work goes to the
    core with the fewest jobs running or queued on it, the lowest-numbered on a tie (a
    simplification of ``select_task_rq_fair``'s idle-sibling and wake-affine choice).
    """
    assert router.homes is not None
    core = router.grace_core
    if core is not None:
        return router.homes[core.index]
    loads = [0 if core.leaf is None else 1 for core in cores]
    for leaf in runqueue.leaves:
        if leaf.affinity is not None:
            loads[leaf.affinity] += len(leaf.queue)
    best = min(range(len(loads)), key=lambda index: (loads[index], index))
    return router.homes[best]


def pull_candidate(core: Core, runqueue: RunQueue, now: float) -> Leaf | None:
    """A waiting per-core leaf elsewhere whose work could start on ``core`` (idle balance).

    The kernel's ``newidle_balance`` pulls from the busiest CPU: here the leaf on the core
    with the most queued jobs, the earliest waiting on a tie.
    """
    best, best_load = None, 0
    loads: dict[int, int] = {}
    for leaf in runqueue.leaves:
        if leaf.affinity is not None:
            loads[leaf.affinity] = loads.get(leaf.affinity, 0) + len(leaf.queue)
    for leaf in runqueue.leaves:
        router = leaf.router
        if router is None or router.homes is None or leaf.affinity == core.index:
            continue
        target = router.homes[core.index]
        if target.queue or not runqueue.startable(target, now):
            continue
        if not runqueue.startable(leaf, now):
            continue  # throttled or held where it is: not runnable, not pulled
        load = loads[leaf.affinity]  # type: ignore[index]
        if best is None or load > best_load:
            best, best_load = leaf, load
    return best
