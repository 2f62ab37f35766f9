"""Per-CPU run queues (``[scheduler] runqueues = "per-cpu"``) of Linux and Linux-VServer.

Modelled on Linux's fair scheduler (S50) and on Linux-VServer 2.2's per-CPU token buckets (S41).

The kernel keeps one ``cfs_rq`` per CPU and, for every task group, one group entity per CPU.
A group's weight (``cpu.shares`` / ``cpu.weight``) is split among its per-CPU entities by the
share of the group's load on each CPU (``calc_group_shares``: ``shares x load_on_cpu /
group_load``, at least ``MIN_SHARES``); each CPU then schedules its own entities (CFS or
EEVDF, one policy instance per CPU, with its own ``min_vruntime`` or average vruntime). So a
group with two busy threads on two CPUs competes on each with half its weight, and three busy
threads of two groups on two CPUs cannot split evenly: a 2 : 1 pair gets 1.5 : 0.5 CPUs where
one global queue would give 4/3 : 2/3.

Here the load of a group on a CPU is its number of runnable jobs there (``active``), not
PELT's decayed average. The load balancer is a simplification of the kernel's: a new job goes
to the CPU with the fewest jobs running or queued (lowest number on a tie), a busy loop's next
chunk stays where it ran, a CPU that would go idle pulls the oldest job from the CPU with the
most queued jobs (``newidle_balance``), and there is no periodic balancing (a placement that
leaves the CPUs' loads uneven but every CPU busy stays, as the kernel's imbalance threshold
often lets it). On one CPU everything is as with one global queue.

Linux-VServer 2.2 and later keep one token bucket per context *per CPU*
(``vx_info_init_sched_pc``): with per-CPU run queues each CPU runs its own VServer policy over
one context entity per guest, each with its own bucket, so a context busy on k CPUs earns k
times the fill rate, and one busy thread only the rate of the CPU it runs on.

Wiring (:func:`add_per_cpu_guest`): each guest has a node above its per-CPU entities
(:class:`TaskGroupPolicy`, neutral in every choice) that reports its CPU time and, with a
quota, the one :class:`~virtlab.sched.bandwidth.Bandwidth` all its entities share; its context
leaf becomes a *router* whose ``homes[c]`` is its leaf on core ``c``.
"""

from __future__ import annotations

from typing import Any

from virtlab.sched.base import Node, Policy
from virtlab.sched.cfs import CfsGroup, CfsPolicy
from virtlab.sched.params import GuestSchedParams
from virtlab.sched.work import Leaf

__all__ = ["TaskGroupPolicy", "add_per_cpu_guest", "split_group_weight"]


class TaskGroupPolicy(Policy):
    """The node of a whole task group above its per-CPU entities: neutral, it only reports.

    Its key is the same for every group (the per-CPU level decides); its counters are the
    group's bandwidth counters (``cpu.stat``), if it has a quota.
    """

    name = "task-group"

    def __init__(self, params: Any, cores: int) -> None:
        super().__init__(params, cores)
        self.members: dict[Node, list[Node]] = {}

    def key(self, node: Node, head_seq: int, now: float) -> tuple[Any, ...]:
        """Neutral: the per-CPU entities below decide."""
        return ()

    def stats(self, node: Node) -> dict[str, float]:
        """The shares and, with a quota, ``cpu.stat``'s counters of the group."""
        members = self.members.get(node, [])
        row: dict[str, float] = {}
        if members and isinstance(members[0], CfsGroup):
            bw = members[0].bw
            if bw is not None and self.dispatcher is not None:
                row.update(bw.stats(self.dispatcher.env.now))
        return row


def add_per_cpu_guest(name: str, sched: GuestSchedParams, cpu_policies: list[Policy],
                      group_policy: TaskGroupPolicy) -> tuple[Node, Leaf, list[Node]]:
    """A guest's group node, its router leaf and its per-CPU entities (one per core).

    The entities share one bandwidth pool whose activity is the group node's.
    """
    group = group_policy.new_node(name, sched, cpus=len(cpu_policies))
    members: list[Node] = []
    homes: list[Leaf] = []
    for index, policy in enumerate(cpu_policies):
        entity = policy.new_node(f"{name}@cpu{index}", sched, cpus=1)
        members.append(entity)
        homes.append(Leaf(entity.name, (entity, group), affinity=index))
    first = members[0]
    shared = first.bw if isinstance(first, CfsGroup) else None
    if shared is not None:
        shared.group = group
        for entity in members:
            entity.bw = shared  # type: ignore[attr-defined]
    group_policy.members[group] = members
    router = Leaf(name, (group,))
    router.homes = homes
    for home in homes:
        home.router = router
    return group, router, list(members)


def split_group_weight(router: Leaf, now: float) -> None:
    """``calc_group_shares``: each CPU's entity gets the group's weight x its share of jobs.

    Entities with no job keep the full weight (it applies again when they next wake alone).
    """
    homes = router.homes
    assert homes is not None
    entities = [home.chain[0] for home in homes]
    if not isinstance(entities[0], CfsGroup):
        return  # VServer: each CPU's bucket is the context's own there, nothing to split
    total = sum(entity.active for entity in entities)
    for entity in entities:
        assert isinstance(entity, CfsGroup) and isinstance(entity.policy, CfsPolicy)
        policy = entity.policy
        full = entity.full_weight
        weight = full if total == 0 or entity.active == 0 else max(
            full * entity.active / total, 2.0 * policy.unit / 1024)  # MIN_SHARES
        if weight != entity.weight:
            policy.reweight(entity, weight, now)
