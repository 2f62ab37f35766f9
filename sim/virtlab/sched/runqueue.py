"""The run queue: the leaves whose work waits, and the hierarchy's choice among them.

Three questions are answered here, each by walking the leaves' chains of nodes from the root:

* **may it start?** (:meth:`RunQueue.startable`): no node of the chain runs on ``limit`` cores
  already, and every node's policy finds it eligible;
* **who goes next?** (:meth:`RunQueue.pick`, :meth:`RunQueue.best`): the smallest key, compared
  level by level: a kernel node's key ``(0,)`` beats every policy's ``(1, key)``, and a node's
  policy key uses the sequence number of the node's oldest waiting job;
* **does woken work preempt running work?** (:func:`preempt_delay_us`): the policy of the
  first level where the two chains part decides.

States of a leaf: *not waiting* (its queue is empty) or *waiting* (in :attr:`RunQueue.leaves`,
in the order it began to wait). Invariants: a leaf is waiting iff its queue is not empty; jobs
get increasing sequence numbers as they are queued, so a re-queued job goes to the back of the
round. The :class:`~virtlab.sched.dispatch.Dispatcher` owns the cores and asks these questions.
"""

from __future__ import annotations

from virtlab.sched.base import INF, Node, Policy
from virtlab.sched.work import Job, Leaf

__all__ = ["RunQueue", "preempt_delay_us"]

_KERNEL_KEY = (0,)


class RunQueue:
    """The waiting leaves, in the order they began to wait, and the choice among them."""

    def __init__(self) -> None:
        self.leaves: list[Leaf] = []
        self._seq = 0

    def push(self, leaf: Leaf, job: Job, now: float, front: bool = False) -> None:
        """Queue ``job`` on ``leaf`` (at the front: a preempted or re-sliced job)."""
        self._seq += 1
        job.seq = self._seq
        job.enqueued_us = now
        if front:
            leaf.queue.appendleft(job)
        else:
            leaf.queue.append(job)
        if not leaf.waiting:
            leaf.waiting = True
            self.leaves.append(leaf)

    def pop(self, leaf: Leaf) -> Job:
        """Take the oldest job of ``leaf`` (the leaf stops waiting when its queue empties)."""
        job = leaf.queue.popleft()
        if not leaf.queue:
            leaf.waiting = False
            self.leaves.remove(leaf)
        return job

    @staticmethod
    def startable(leaf: Leaf, now: float) -> bool:
        """Whether work of ``leaf`` may start now: below every limit, eligible at every level."""
        for node in leaf.chain:
            if node.running >= node.limit:
                return False
            if node.policy is not None and not node.policy.eligible(node, now):
                return False
        return True

    def pick(self, now: float, core: int | None = None) -> Leaf | None:
        """The waiting leaf that runs next among those that may start now (on ``core``)."""
        return self.best([leaf for leaf in self.leaves
                          if (core is None or leaf.affinity is None or leaf.affinity == core)
                          and self.startable(leaf, now)], now)

    @staticmethod
    def best(candidates: list[Leaf], now: float) -> Leaf | None:
        """Smallest key, level by level from the root (a node's key uses its oldest work)."""
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        heads: dict[Node, int] = {}
        for leaf in candidates:
            head = leaf.queue[0].seq
            for node in leaf.chain:
                if heads.get(node, head + 1) > head:
                    heads[node] = head
        best, best_key = None, None
        for leaf in candidates:
            key = tuple(_KERNEL_KEY if node.policy is None
                        else (1, node.policy.key(node, heads[node], now)) for node in leaf.chain)
            if best_key is None or key < best_key:
                best, best_key = leaf, key
        return best

    def held(self, now: float) -> dict[Policy, list[Node]]:
        """The ineligible nodes above waiting leaves, by policy (in order of waiting)."""
        held: dict[Policy, list[Node]] = {}
        for leaf in self.leaves:
            for node in leaf.chain:
                if node.policy is not None and not node.policy.eligible(node, now):
                    held.setdefault(node.policy, []).append(node)
        return held

    def release_at_us(self, now: float) -> float:
        """When the first ineligible node above a waiting leaf becomes eligible (INF: unknown)."""
        soonest = INF
        for leaf in self.leaves:
            for node in leaf.chain:
                if node.policy is not None and not node.policy.eligible(node, now):
                    soonest = min(soonest, node.policy.release_at_us(node, now))
        return soonest


def preempt_delay_us(waker: Leaf, running: Leaf, stint_us: float, now: float) -> float | None:
    """Whether freshly woken work of ``waker`` preempts CPU-bound ``running``, and when.

    ``None``: no; ``0``: now; a positive value: not before that much longer. The first level
    where the chains differ decides: kernel work preempts tasks at once and is never preempted;
    otherwise that level's policy answers. Within one node it is first come, first served.
    """
    for mine, theirs in zip(waker.chain, running.chain, strict=False):
        if mine is theirs:
            continue
        if mine.policy is None:
            return 0.0  # interrupts and softirqs preempt tasks
        if theirs.policy is None:
            return None
        return mine.policy.preempt_delay_us(mine, theirs, stint_us, now)
    return None  # same node: first come, first served inside it
