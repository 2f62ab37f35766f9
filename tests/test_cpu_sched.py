"""Mechanism tests of the CPU dispatcher and its policies, with deterministic inputs.

Each test builds a dispatcher directly, feeds it short (non-preemptible) and CPU-bound
(preemptible) work at fixed times, and checks the exact order and times at which work ran.
"""

from __future__ import annotations

import pytest
import simpy
from simpy.events import Event

from virtlab.sched.base import FifoPolicy, Node
from virtlab.sched.cfs import CfsPolicy
from virtlab.sched.credit import CreditPolicy
from virtlab.sched.dispatch import Dispatcher, Leaf, SchedRecorder
from virtlab.sched.openvz import OpenVzPolicy
from virtlab.sched.params import GuestSchedParams, SchedulerParams
from virtlab.sched.vserver import VServerPolicy


class Bench:
    """A dispatcher with one policy, leaves made on demand, and a log of who started when."""

    def __init__(self, policy_class, cores=1, **params):
        self.env = simpy.Environment()
        self.params = SchedulerParams(**params)
        self.dispatcher = Dispatcher(self.env, cores)
        self.dispatcher.recorder = SchedRecorder()
        self.policy = self.dispatcher.add_policy(policy_class(self.params, cores))
        self.log: list[tuple[str, str, float]] = []
        self.kernel = Leaf("kernel", (self.dispatcher.add_node(Node("kernel", None,
                                                                     kernel=True)),))

    def leaf(self, name, sched=None, cpus=1):
        node = self.dispatcher.add_node(
            self.policy.new_node(name, sched or GuestSchedParams(), cpus=cpus))
        return Leaf(name, (node,))

    def short(self, leaf, at_us, duration_us):
        def work():
            yield self.env.timeout(at_us)
            got = self.dispatcher.acquire(leaf)
            core = (yield got) if isinstance(got, Event) else got
            self.log.append((leaf.name, "start", self.env.now))
            yield self.env.timeout(duration_us)
            self.dispatcher.finish(core)
            self.log.append((leaf.name, "end", self.env.now))

        self.env.process(work())

    def hog(self, leaf, at_us, work_us, chunks=1):
        def work():
            yield self.env.timeout(at_us)
            for _ in range(chunks):
                yield self.dispatcher.compute(leaf, work_us)
            self.log.append((leaf.name, "done", self.env.now))

        self.env.process(work())

    def run(self, until_us):
        self.dispatcher.start()
        self.env.run(until=until_us)
        self.dispatcher.check()
        return self

    def usage(self, leaf):
        return self.dispatcher.usage_us(leaf.chain[-1], self.env.now)


def test_fifo_runs_short_work_in_arrival_order_without_preemption():
    bench = Bench(FifoPolicy)
    a, b, c = bench.leaf("a"), bench.leaf("b"), bench.leaf("c")
    bench.short(a, 0.0, 5.0)
    bench.short(b, 1.0, 5.0)
    bench.short(c, 2.0, 5.0)
    bench.run(100.0)
    starts = [(name, t) for name, what, t in bench.log if what == "start"]
    assert starts == [("a", 0.0), ("b", 5.0), ("c", 10.0)]


def test_cpu_bound_work_under_fifo_runs_as_one_block():
    bench = Bench(FifoPolicy)
    hog, io = bench.leaf("hog"), bench.leaf("io")
    bench.hog(hog, 0.0, 10_000.0)
    bench.short(io, 1.0, 5.0)
    bench.run(20_000.0)
    assert ("io", "start", 10_000.0) in bench.log


def test_kernel_work_preempts_cpu_bound_work_at_once():
    bench = Bench(CfsPolicy, host="cfs")
    hog = bench.leaf("hog")
    bench.hog(hog, 0.0, 1_000.0)
    bench.short(bench.kernel, 100.0, 7.0)
    bench.run(5_000.0)
    assert ("kernel", "start", 100.0) in bench.log
    assert ("hog", "done", 1_007.0) in bench.log  # the hog lost exactly the kernel's 7 µs


def test_chunks_of_cpu_bound_work_continue_one_stint():
    """A busy loop's next chunk at the same instant does not give the core away."""
    bench = Bench(FifoPolicy)
    hog, other = bench.leaf("hog"), bench.leaf("other")
    bench.hog(hog, 0.0, 1_000.0, chunks=3)
    bench.hog(other, 10.0, 1_000.0)
    bench.run(10_000.0)
    runs = bench.dispatcher.recorder.runs
    assert runs[0] == ("hog", 0, 0.0, 3_000.0)
    assert runs[1] == ("other", 0, 3_000.0, 4_000.0)


def test_work_arriving_at_the_same_instant_competes_for_a_freed_core():
    """A core freed at t is handed out only after every event at t (limbo)."""
    bench = Bench(FifoPolicy)
    task = bench.leaf("task")
    bench.short(task, 0.0, 10.0)          # holds the only core until t = 10
    bench.short(task, 5.0, 100.0)         # waits
    bench.short(bench.kernel, 10.0, 3.0)  # an interrupt exactly when the core frees
    bench.run(5_000.0)
    starts = [(name, t) for name, what, t in bench.log if what == "start"]
    assert starts == [("task", 0.0), ("kernel", 10.0), ("task", 13.0)]


def test_cfs_weights_divide_one_core_exactly():
    bench = Bench(CfsPolicy, host="cfs")
    heavy = bench.leaf("heavy", GuestSchedParams(weight=300))
    light = bench.leaf("light", GuestSchedParams(weight=100))
    bench.hog(heavy, 0.0, 1e9)
    bench.hog(light, 0.0, 1e9)
    bench.run(1_200_000.0)
    assert bench.usage(heavy) == pytest.approx(900_000.0, abs=3_000.0)
    assert bench.usage(light) == pytest.approx(300_000.0, abs=3_000.0)


def test_cfs_waking_group_preempts_a_cpu_bound_one_it_is_behind():
    bench = Bench(CfsPolicy, host="cfs")
    hog, io = bench.leaf("hog"), bench.leaf("io")
    bench.hog(hog, 0.0, 1e9)
    bench.short(io, 2_500.0, 10.0)
    bench.run(10_000.0)
    assert ("io", "start", 2_500.0) in bench.log


def test_cfs_waking_group_that_is_ahead_waits_for_quantum_ends():
    bench = Bench(CfsPolicy, host="cfs")
    hog, io = bench.leaf("hog"), bench.leaf("io")
    bench.short(io, 0.0, 10_000.0)   # io is 10 ms ahead in virtual time
    bench.hog(hog, 1.0, 1e9)         # starts at 10 ms, quanta of 3 ms
    bench.short(io, 12_000.0, 10.0)
    bench.run(40_000.0)
    starts = [t for name, what, t in bench.log if name == "io" and what == "start"]
    # The hog's vruntime passes io's 10 ms only at the quantum ending at 22 ms.
    assert starts == [0.0, 22_000.0]


def test_cfs_quota_throttles_until_the_next_period():
    bench = Bench(CfsPolicy, host="cfs")
    group = bench.leaf("g", GuestSchedParams(cfs_quota_us=20_000.0, cfs_period_us=100_000.0))
    bench.hog(group, 0.0, 1e9)
    bench.run(1_000_000.0)
    runs = bench.dispatcher.recorder.runs
    assert bench.usage(group) == pytest.approx(200_000.0)
    assert max(end for _, _, _, end in runs if end <= 100_000.0) == pytest.approx(20_000.0)
    stats = bench.policy.stats(group.chain[0])
    assert stats["nr_periods"] == stats["nr_throttled"] == 10


def test_vserver_hard_limit_holds_an_empty_bucket_until_tokens_min():
    bench = Bench(VServerPolicy, host="vserver", hz=1000)
    sched = GuestSchedParams(vserver_hard=True, vserver_fill_rate=1, vserver_interval_ticks=4,
                             vserver_tokens_min=15, vserver_tokens_max=20)
    ctx = bench.leaf("ctx", sched)
    bench.hog(ctx, 0.0, 1e9)
    bench.run(4_000_000.0)
    node = ctx.chain[0]
    assert node.holds > 0
    # 20 tokens at the start, then 1 token per 4 ticks: 25 % of the core in the long run.
    assert bench.usage(ctx) == pytest.approx(20_000 + 0.25 * 4_000_000, rel=0.01)


def test_vserver_idle_skipping_makes_the_limit_work_conserving():
    sched = GuestSchedParams(vserver_hard=True, vserver_idle_skip=True)
    bench = Bench(VServerPolicy, host="vserver")
    ctx = bench.leaf("ctx", sched)
    bench.hog(ctx, 0.0, 1e9)
    bench.run(1_000_000.0)
    assert bench.usage(ctx) == pytest.approx(1_000_000.0, rel=1e-3)


def test_openvz_cpulimit_caps_a_busy_container():
    bench = Bench(OpenVzPolicy, host="openvz")
    ve = bench.leaf("ve", GuestSchedParams(openvz_cpulimit_pct=10.0))
    bench.hog(ve, 0.0, 1e9)
    bench.run(10_000_000.0)
    # The bucket starts full (two timeslices on one CPU), then 10 % of the core.
    assert bench.usage(ve) == pytest.approx(1_000_000.0 + 32_000.0, rel=0.02)


def test_openvz_does_not_preempt_across_containers_on_wakeup():
    bench = Bench(OpenVzPolicy, host="openvz")
    hog, io = bench.leaf("hog"), bench.leaf("io")
    bench.hog(hog, 0.0, 1e9)
    bench.short(io, 1_000.0, 10.0)
    bench.run(40_000.0)
    assert ("io", "start", 16_000.0) in bench.log  # the end of the hog's timeslice


def _credit_bench(**params):
    return Bench(CreditPolicy, host="fifo", vcpu="credit", **params)


def test_credit_boosted_waker_preempts_after_the_rate_limit():
    bench = _credit_bench(credit_ratelimit_us=1_000.0)
    hog, io = bench.leaf("hog"), bench.leaf("io")
    bench.hog(hog, 0.0, 1e9)
    bench.short(io, 30_200.0, 10.0)  # the hog's boost from its own wake-up ended at 10 ms
    bench.run(40_000.0)
    # The hog's second timeslice began at 30 ms: it keeps the core for 1 ms, then io runs.
    assert ("io", "start", 31_000.0) in bench.log


def test_credit_runs_a_whole_timeslice_the_tick_does_not_reschedule():
    """Two busy domains on one core alternate 30 ms slices; the 10 ms ticks only account."""
    bench = _credit_bench()
    first, second = bench.leaf("first"), bench.leaf("second")
    bench.hog(first, 0.0, 1e9)
    bench.hog(second, 0.0, 1e9)
    bench.run(90_000.0)
    stints = [(leaf, start, end) for leaf, _core, start, end in bench.dispatcher.recorder.runs]
    assert stints[:2] == [("first", 0.0, 30_000.0), ("second", 30_000.0, 60_000.0)]


def test_credit_weights_2_to_1_with_whole_timeslices():
    """Priorities change only at accounting: the heavy domain stays UNDER through a slice that
    takes it below zero, and in every 90 ms it runs two slices to the light one's one."""
    bench = _credit_bench()
    heavy = bench.leaf("heavy", GuestSchedParams(credit_weight=512))
    light = bench.leaf("light", GuestSchedParams(credit_weight=256))
    bench.hog(heavy, 0.0, 1e9)
    bench.hog(light, 0.0, 1e9)
    bench.run(9_000_000.0)
    assert bench.usage(heavy) == pytest.approx(6_000_000.0, abs=30_000.0)
    assert bench.usage(light) == pytest.approx(3_000_000.0, abs=30_000.0)


def test_credit_without_rate_limit_preempts_at_once():
    bench = _credit_bench(credit_ratelimit_us=0.0)
    hog, io = bench.leaf("hog"), bench.leaf("io")
    bench.hog(hog, 0.0, 1e9)
    bench.short(io, 10_500.0, 10.0)
    bench.run(40_000.0)
    assert ("io", "start", 10_500.0) in bench.log


def test_credit_cap_parks_a_domain_for_the_rest_of_the_period():
    bench = _credit_bench()
    dom = bench.leaf("dom", GuestSchedParams(credit_cap_pct=25))
    bench.hog(dom, 0.0, 1e9)
    bench.run(3_000_000.0)
    assert bench.usage(dom) == pytest.approx(0.25 * 3_000_000.0, rel=1e-6)
    assert dom.chain[0].parks == 100


def test_credit_weights_divide_one_core():
    bench = _credit_bench()
    heavy = bench.leaf("heavy", GuestSchedParams(credit_weight=512))
    light = bench.leaf("light", GuestSchedParams(credit_weight=256))
    bench.hog(heavy, 0.0, 1e9)
    bench.hog(light, 0.0, 1e9)
    bench.run(6_000_000.0)
    assert bench.usage(heavy) / 6_000_000.0 == pytest.approx(2 / 3, abs=0.01)


def test_a_node_never_runs_on_more_cores_than_its_limit():
    bench = Bench(FifoPolicy, cores=4)
    node = bench.dispatcher.add_node(bench.policy.new_node("dom0", GuestSchedParams(), cpus=2,
                                                           limit=2))
    leaf = Leaf("dom0", (node,))
    for i in range(6):
        bench.short(leaf, float(i), 100.0)
    bench.run(1_000.0)
    starts = sorted(t for name, what, t in bench.log if what == "start")
    assert starts == [0.0, 1.0, 100.0, 101.0, 200.0, 201.0]
