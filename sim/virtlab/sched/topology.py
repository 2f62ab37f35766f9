"""Which scheduler runs which work: from a scenario to a dispatcher with its policies.

With ``vcpu = "host"`` (KVM) there is one kernel and one scheduler, ``host``:

* each guest is a group (a cgroup, a VServer context, an OpenVZ VE) holding its application or
  vCPU threads and, for a VM, its backend threads (vhost workers and QEMU's I/O thread are
  charged to the VM's cgroup);
* interrupt and softirq work (contexts whose role is ``kernel``, and work with no context)
  runs first and is not charged to any group.

With ``vcpu = "credit"`` (Xen) the credit scheduler runs the cores: each VM is a domain, and
**dom0** is one more domain that runs everything else: the backends of every VM (a driver
domain), the host's softirqs, and native or container guests. Inside dom0, the ``host``
scheduler shares dom0's CPU time among those, so a two-level hierarchy results.

A context's role comes from ``ExecContext.role`` when the path sets it (``"vcpu"``,
``"backend"``, ``"kernel"``), otherwise from its name: the guest is the part before the first
dot, and a name containing ``softirq``, ``napi`` or ``irq`` is kernel work.
"""

from __future__ import annotations

from typing import Any

import simpy

from virtlab.sched.base import INF, FifoPolicy, Node, Policy
from virtlab.sched.cfs import CfsPolicy
from virtlab.sched.credit import CreditPolicy, Domain
from virtlab.sched.dispatch import Dispatcher, Leaf
from virtlab.sched.eevdf import EevdfPolicy
from virtlab.sched.openvz import OpenVzPolicy
from virtlab.sched.params import GuestSchedParams, SchedulerParams
from virtlab.sched.percpu import TaskGroupPolicy, add_per_cpu_guest, split_group_weight
from virtlab.sched.vserver import VServerPolicy
from virtlab.trace import Tracer

__all__ = ["HostScheduler", "build_scheduler", "POLICIES", "VM_APPROACHES"]

POLICIES: dict[str, type[Policy]] = {
    "fifo": FifoPolicy, "cfs": CfsPolicy, "eevdf": EevdfPolicy, "vserver": VServerPolicy,
    "openvz": OpenVzPolicy}
#: Approaches whose guests have vCPUs of their own (everything else runs on the host kernel).
VM_APPROACHES = ("passthrough", "paravirtual", "emulated")
_KERNEL_WORDS = ("softirq", "napi", "irq")


class HostScheduler(Dispatcher):
    """The dispatcher of one host, with the mapping from execution contexts to leaves.

    Parameters
    ----------
    env:
        The SimPy environment.
    params:
        The scenario's ``[scheduler]`` table.
    cores:
        Physical cores of the host.
    tracer:
        Receives scheduler events.

    """

    def __init__(self, env: simpy.Environment, params: SchedulerParams, cores: int,
                 tracer: Tracer | None = None) -> None:
        super().__init__(env, cores, tracer)
        self.params = params
        self.host_policy = self.add_policy(POLICIES[params.fair](params, cores))
        self.cpu_policies: list[Any] = []
        if params.runqueues == "per-cpu":  # one fair scheduler per core, a neutral group level
            self.per_cpu = True
            self.on_activity = split_group_weight
            self.cpu_policies = [self.add_policy(POLICIES[params.fair](params, 1))
                                 for _ in range(cores)]
            self.group_policy = self.add_policy(TaskGroupPolicy(params, cores))
        self.credit: CreditPolicy | None = None
        self._by_ctx: dict[Any, Leaf] = {}
        self._guests: dict[str, tuple[str, Leaf]] = {}  # name -> (approach, main leaf)
        self._backends: dict[str, Leaf] = {}
        self.guest_nodes: dict[str, Node] = {}
        if params.vcpu == "credit":
            self.credit = self.add_policy(CreditPolicy(params, cores))  # type: ignore[assignment]
            assert self.credit is not None
            vcpus = params.dom0_vcpus or cores
            self.dom0: Domain | None = self.add_node(self.credit.new_domain(  # type: ignore[assignment]
                "dom0", weight=params.dom0_weight, vcpus=vcpus,
                limit=params.dom0_vcpus or INF))
            kernel = self.add_node(Node("dom0/kernel", None, kernel=True))
            self.kernel_leaf = Leaf("dom0/kernel", (self.dom0, kernel))  # type: ignore[arg-type]
        else:
            self.dom0 = None
            kernel = self.add_node(Node("kernel", None, kernel=True))
            self.kernel_leaf = Leaf("kernel", (kernel,))

    def add_guest(self, name: str, approach: str, sched: GuestSchedParams, cpus: int,
                  app_ctx: Any) -> None:
        """Register a guest and the context its application (or its vCPUs) run in."""
        if self.dom0 is not None and approach in VM_APPROACHES:
            assert self.credit is not None
            node = self.add_node(self.credit.new_node(name, sched, cpus=cpus))
            leaf = Leaf(name, (node,))
        elif self.dom0 is not None:
            node = self.add_node(self.host_policy.new_node(f"dom0/{name}", sched, cpus=cpus))
            leaf = Leaf(node.name, (self.dom0, node))
        elif self.per_cpu:
            node, leaf, entities = add_per_cpu_guest(name, sched, self.cpu_policies,
                                                     self.group_policy)  # type: ignore[arg-type]
            self.add_node(node)
            for entity in entities:
                self.add_node(entity)
        else:
            node = self.add_node(self.host_policy.new_node(name, sched, cpus=cpus))
            leaf = Leaf(name, (node,))
        self.guest_nodes[name] = node
        self._guests[name] = (approach, leaf)
        self._by_ctx[app_ctx] = leaf

    def leaf_of(self, ctx: Any) -> Leaf:
        """The leaf whose queue the work of ``ctx`` joins (``None``: the host kernel)."""
        leaf = self._by_ctx.get(ctx)
        if leaf is None:
            leaf = self._classify(ctx)
            self._by_ctx[ctx] = leaf
        return leaf

    def _classify(self, ctx: Any) -> Leaf:
        if ctx is None:
            return self.kernel_leaf
        name: str = ctx.name
        guest = name.split(".", 1)[0]
        role = getattr(ctx, "role", None) or (
            "kernel" if any(word in name for word in _KERNEL_WORDS) else "backend")
        known = self._guests.get(guest)
        if known is None or role == "kernel":
            return self.kernel_leaf
        approach, main = known
        if role == "vcpu" or approach not in VM_APPROACHES:
            return main
        if self.dom0 is None:
            return main  # KVM: backend threads belong to the VM's cgroup
        leaf = self._backends.get(guest)
        if leaf is None:  # Xen: the VM's backends run in dom0, as one process group there
            node = self.add_node(self.host_policy.new_node(
                f"dom0/{guest}-backends", GuestSchedParams(), cpus=self.params.dom0_vcpus or
                len(self.cores)))
            leaf = Leaf(node.name, (self.dom0, node))
            self._backends[guest] = leaf
        return leaf

    def window_stats(self, warmup_us: float, duration_us: float) -> None:
        """Measure per-node usage and counters over ``[warmup_us, duration_us]``.

        Starts a process that snapshots at the window's start; the end snapshot is taken at
        ``duration_us`` by :meth:`close_window` (called after the run, because a run stops
        before the events of its final instant) or by the process if the run goes on longer.
        The result, ``{node: {metric: value over the window}}``, is in :attr:`window`.
        """
        self.window: dict[str, dict[str, float]] = {}
        self._window_end_us = duration_us
        self._before: dict[str, dict[str, float]] | None = None

        def measure() -> Any:
            yield self.env.timeout(warmup_us)
            self._before = self.snapshot()
            yield self.env.timeout(duration_us - warmup_us)
            self.close_window()

        self.env.process(measure())

    def close_window(self) -> None:
        """Take the end snapshot of the window now (once)."""
        if self.window or self._before is None or self.env.now < self._window_end_us:
            return
        before = self._before
        for node, row in self.snapshot().items():
            start = before.get(node, {})
            self.window[node] = {key: value - start.get(key, 0.0) if _cumulative(key) else value
                                 for key, value in row.items()}


def _cumulative(metric: str) -> bool:
    """Counters that grow over time (deltas over the window make sense)."""
    return metric in ("cpu_us", "nr_periods", "nr_throttled", "throttled_us",
                      "bandwidth_slices", "holds", "held_us", "idle_skips", "idle_tokens",
                      "delays", "delayed_us", "boosts", "parks", "parked_us")


def build_scheduler(env: simpy.Environment, params: SchedulerParams, cores: int,
                    tracer: Tracer | None = None) -> HostScheduler | None:
    """The host's scheduler, or ``None`` for the foundation's FIFO core pool (fast path)."""
    if params.host == "fifo" and params.vcpu == "host":
        return None
    return HostScheduler(env, params, cores, tracer)
