"""CPU schedulers: who gets the host's cores when guests compete (S38, S41, S42, S66).

Containers share one kernel and therefore one scheduler; virtual machines are scheduled as
vCPUs by the hypervisor, and their backends compete for CPU too. A scenario's ``[scheduler]``
table names the host's scheduler and who schedules vCPUs; each guest's ``sched`` table holds
its weights, quotas and caps.

========================  ==============================================================
``SchedulerParams``       the ``[scheduler]`` table: which schedulers, system tunables
``GuestSchedParams``      a guest's ``sched`` table: weight/shares, quota, buckets, caps
``build_scheduler``       a scenario's dispatcher (``None`` for the FIFO fast path)
``HostScheduler``         the dispatcher plus the mapping of contexts to scheduling groups
``Dispatcher``            cores, queues, quanta and preemption under a policy hierarchy
``Policy``, ``Node``      what a scheduling policy and its entities provide
``CfsPolicy``             CFS group scheduling (Linux 2.6.23 to 6.5)
``EevdfPolicy``           EEVDF group scheduling (Linux 6.6 on): lag placement, deadlines
``Bandwidth``             CFS bandwidth control: quota per period, tick-granular
``TaskGroupPolicy``       a group above its per-CPU entities (per-CPU run queues)
``VServerPolicy``         Linux-VServer token buckets with idle-time skipping
``OpenVzPolicy``          OpenVZ fair scheduler: start tags and cpulimit
``CreditPolicy``          Xen credit scheduler: weights, caps, BOOST
``shares_to_weight``      cgroup v1 shares -> v2 weight, old and current runtimes (S39, S39b)
========================  ==============================================================
"""

from __future__ import annotations

from virtlab.sched.bandwidth import Bandwidth
from virtlab.sched.base import FifoPolicy, Node, Policy
from virtlab.sched.cfs import CfsPolicy
from virtlab.sched.credit import CreditPolicy
from virtlab.sched.dispatch import Dispatcher, SchedRecorder
from virtlab.sched.eevdf import EevdfPolicy
from virtlab.sched.openvz import OpenVzPolicy
from virtlab.sched.params import (
    GuestSchedParams,
    SchedulerParams,
    shares_to_weight,
    weight_to_shares,
)
from virtlab.sched.percpu import TaskGroupPolicy
from virtlab.sched.topology import HostScheduler, build_scheduler
from virtlab.sched.vserver import VServerPolicy

__all__ = [
    "SchedulerParams",
    "GuestSchedParams",
    "build_scheduler",
    "HostScheduler",
    "Dispatcher",
    "SchedRecorder",
    "Policy",
    "Node",
    "FifoPolicy",
    "CfsPolicy",
    "EevdfPolicy",
    "Bandwidth",
    "TaskGroupPolicy",
    "VServerPolicy",
    "OpenVzPolicy",
    "CreditPolicy",
    "shares_to_weight",
    "weight_to_shares",
]
