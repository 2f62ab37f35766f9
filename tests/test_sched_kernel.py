"""The Linux schedulers against the kernel's behaviour on cases outside the examples.

Each expectation is derived from the kernel's rules (``kernel/sched/fair.c``, S50, S51), not
from a run of the model: shares from weights, a quota's long-run rate, the exact stints of a
busy loop whose exhausted quota is noticed at the next tick, the share of a task that sleeps as
long as it runs. Where a wrong parameter would give a nearby number, the test shows that it is
rejected.
"""

from __future__ import annotations

import pytest

from tests.test_cpu_sched import Bench  # the dispatcher bench of the mechanism tests
from virtlab.config import GuestSpec, Scenario, scenario_from_dict
from virtlab.hardware import HostParams
from virtlab.model import run
from virtlab.sched.cfs import CfsPolicy
from virtlab.sched.eevdf import EevdfPolicy
from virtlab.sched.params import GuestSchedParams, SchedulerParams
from virtlab.workload import CpuHog

FAIR = ["cfs", "eevdf"]
POLICY = {"cfs": CfsPolicy, "eevdf": EevdfPolicy}


def _scenario(host: str, guests: list[tuple[str, GuestSchedParams, CpuHog]], *, cores: int,
              duration_us: float = 3_300_000.0, warmup_us: float = 300_000.0,
              **scheduler) -> Scenario:
    specs = tuple(GuestSpec(name=name, approach="container", vcpus=hog.threads,
                            workloads=(hog,), sched=sched) for name, sched, hog in guests)
    return Scenario(duration_us=duration_us, warmup_us=warmup_us, host=HostParams(cores=cores),
                    scheduler=SchedulerParams(host=host, **scheduler), guests=specs)


def _pct(result, guest: str) -> float:
    return next(s.guest_cpu_pct for s in result.summaries if s.guest == guest)


# Shares ------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", FAIR)
def test_three_groups_1_2_5_share_one_cpu_by_weight(host):
    weights = (100, 200, 500)
    result = run(_scenario(host, [(f"g{w}", GuestSchedParams(weight=w), CpuHog())
                                  for w in weights], cores=1))
    got = [_pct(result, f"g{w}") for w in weights]
    want = [100.0 * w / sum(weights) for w in weights]  # 12.5, 25, 62.5
    assert got == pytest.approx(want, abs=0.5)
    wrong = [100.0 * w / 700 for w in (100, 200, 400)]  # 1:2:4 is told apart
    assert max(abs(g - w) for g, w in zip(got, wrong, strict=True)) > 2.0


@pytest.mark.parametrize("host", FAIR)
def test_two_to_one_with_two_heavy_threads_on_one_cpu(host):
    """On one CPU a group's thread count does not matter: 2 : 1 by weight."""
    result = run(_scenario(host, [("heavy", GuestSchedParams(weight=200), CpuHog(threads=2)),
                                  ("light", GuestSchedParams(weight=100), CpuHog())], cores=1))
    assert _pct(result, "heavy") == pytest.approx(200 / 3, abs=0.5)
    assert _pct(result, "light") == pytest.approx(100 / 3, abs=0.5)


@pytest.mark.parametrize("host", FAIR)
def test_two_to_one_with_two_heavy_threads_on_two_cpus_per_cpu_queues(host):
    """Three busy threads on two CPUs: one heavy thread has a CPU to itself, the other shares
    one with the light thread, and the heavy group's weight is split between its two CPUs
    (calc_group_shares), so that CPU splits 1 : 1: heavy 1.5 CPUs, light 0.5."""
    guests = [("heavy", GuestSchedParams(weight=200), CpuHog(threads=2)),
              ("light", GuestSchedParams(weight=100), CpuHog())]
    per_cpu = run(_scenario(host, guests, cores=2, runqueues="per-cpu"))
    assert _pct(per_cpu, "heavy") == pytest.approx(150.0, abs=1.0)
    assert _pct(per_cpu, "light") == pytest.approx(50.0, abs=1.0)
    # One global queue is the fluid ideal instead: 2 : 1 of two CPUs, 4/3 and 2/3.
    ideal = run(_scenario(host, guests, cores=2))
    assert _pct(ideal, "heavy") == pytest.approx(400 / 3, abs=1.0)
    assert _pct(ideal, "light") == pytest.approx(200 / 3, abs=1.0)


@pytest.mark.parametrize("host", FAIR)
def test_per_cpu_queues_change_nothing_on_one_cpu(host):
    guests = [(f"g{w}", GuestSchedParams(weight=w), CpuHog(threads=1 + w // 300))
              for w in (100, 200, 500)]
    single = run(_scenario(host, guests, cores=1))
    per_cpu = run(_scenario(host, guests, cores=1, runqueues="per-cpu"))
    for w in (100, 200, 500):
        assert _pct(per_cpu, f"g{w}") == pytest.approx(_pct(single, f"g{w}"), abs=1e-9)


# A task that sleeps as long as it runs -------------------------------------------------------
def _sleeper_vs_hog(host: str):
    return run(_scenario(host, [
        ("sleeper", GuestSchedParams(), CpuHog(chunk_us=10_000.0, think_us=10_000.0)),
        ("hog", GuestSchedParams(), CpuHog())], cores=1))


def test_eevdf_gives_a_sleeper_its_share_while_runnable():
    """No sleeper credit: 10 ms of CPU at half a CPU takes 20 ms, then 10 ms asleep: 1/3."""
    result = _sleeper_vs_hog("eevdf")
    assert _pct(result, "sleeper") == pytest.approx(100 / 3, abs=0.5)
    assert _pct(result, "hog") == pytest.approx(200 / 3, abs=0.5)


def test_cfs_sleeper_credit_gives_a_sleeper_more_than_its_share():
    """Placed 3 ms behind min_vruntime at each wake-up, the sleeper runs up to 3 ms alone first:
    at most 10 ms per 3 + 14 + 10 ms cycle (10/27), and more than a third."""
    sleeper = _pct(_sleeper_vs_hog("cfs"), "sleeper")
    assert 100 / 3 + 1.0 < sleeper <= 100 * 10 / 27 + 0.5


# Bandwidth at the tick -----------------------------------------------------------------------
def _busy_loop_stints(host: str, hz: int, hrtick: bool, until_us: float = 61_000.0):
    bench = Bench(POLICY[host], host=host, hz=hz, hrtick=hrtick)
    group = bench.leaf("g", GuestSchedParams(cfs_quota_us=2_000.0, cfs_period_us=5_000.0))
    bench.hog(group, 0.0, 1e9)
    bench.run(until_us)
    stints = [(start, end) for _leaf, _core, start, end in bench.dispatcher.recorder.runs]
    merged: list[tuple[float, float]] = []
    for start, end in stints:  # a slice renewed back to back is one stretch of running
        if merged and abs(merged[-1][1] - start) < 1e-9:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged, bench.policy.stats(group.chain[0])


@pytest.mark.parametrize("host", FAIR)
def test_a_2_of_5_ms_quota_at_hz_250_overruns_to_the_tick_and_repays(host):
    """Ticks every 4 ms, a refill of 2 ms every 5 ms, the debt carried over.

    0-4: 2 ms of quota, noticed gone at the tick: 2 ms overrun (pool -2). 5: refill to 0, still
    throttled. 10: 2 ms, runs to 12 (a tick). 15: 2 ms, runs to the tick at 20 (-3, refilled
    to -1 at 20). 25: 1 ms, runs to 28 (-2). 30: 0. 35: 2 ms again: a 20 ms cycle of 5 + 3 ms,
    40 % of the CPU as the quota allows, throttled in three periods out of four.
    """
    stints, stats = _busy_loop_stints(host, hz=250, hrtick=False)
    ms = [(round(s / 1000, 6), round(e / 1000, 6)) for s, e in stints]
    assert ms == [(0, 4), (10, 12), (15, 20), (25, 28), (35, 40), (45, 48), (55, 60)]
    # Periods [0,5) .. [55,60): running in [15,20), [35,40), [55,60) without being throttled.
    assert stats["nr_periods"] == 12
    assert stats["nr_throttled"] == 9


@pytest.mark.parametrize("host", FAIR)
def test_with_a_high_resolution_tick_the_quota_is_exact(host):
    stints, stats = _busy_loop_stints(host, hz=250, hrtick=True)
    ms = [(round(s / 1000, 6), round(e / 1000, 6)) for s, e in stints]
    assert ms == [(5 * k, 5 * k + 2) for k in range(12)]
    assert stats["nr_periods"] == stats["nr_throttled"] == 12


@pytest.mark.parametrize("host", FAIR)
def test_the_tick_overrun_averages_out_to_the_quota(host):
    """Over many periods the share is quota / period whatever the tick (debts are repaid)."""
    for hz in (100, 250, 1000):
        stints, _stats = _busy_loop_stints(host, hz=hz, hrtick=False, until_us=2_000_000.0)
        used = sum(e - s for s, e in stints)
        assert used / 2_000_000.0 == pytest.approx(0.4, abs=0.011), hz  # one tick at HZ 100


# Quotas above one CPU, and quotas that do not bind -------------------------------------------
@pytest.mark.parametrize("runqueues", ["global", "per-cpu"])
@pytest.mark.parametrize("host", FAIR)
def test_a_1_5_cpu_quota_gives_one_and_a_half_cores_of_two(host, runqueues):
    quota = GuestSchedParams(cfs_quota_us=150_000.0, cfs_period_us=100_000.0)
    result = run(_scenario(host, [("limited", quota, CpuHog(threads=2))], cores=2,
                           runqueues=runqueues))
    assert _pct(result, "limited") == pytest.approx(150.0, abs=1.0)
    assert result.sched_stats["limited"]["nr_throttled"] == result.sched_stats["limited"][
        "nr_periods"] > 0
    # The quota, not the cores: 200 % would be the unlimited answer.
    assert _pct(result, "limited") < 190.0


@pytest.mark.parametrize("host", FAIR)
def test_a_quota_that_does_not_bind_leaves_the_shares_alone(host):
    """60 ms per 100 ms beside an equal busy group on one CPU: the weight gives 50 % first."""
    quota = GuestSchedParams(cfs_quota_us=60_000.0, cfs_period_us=100_000.0)
    result = run(_scenario(host, [("limited", quota, CpuHog()),
                                  ("other", GuestSchedParams(), CpuHog())], cores=1))
    assert _pct(result, "limited") == pytest.approx(50.0, abs=0.5)
    assert result.sched_stats["limited"]["nr_throttled"] == 0


# Which Linux -------------------------------------------------------------------------------
@pytest.mark.parametrize(("profile", "fair", "hz"), [
    ("modern", "eevdf", 1000), ("testbed-2014", "cfs", 250), ("era-2007", "cfs", 250)])
def test_the_profile_chooses_the_kernel_generation(profile, fair, hz):
    scenario = scenario_from_dict({"scheduler": {"host": "linux"}}, profile)
    assert (scenario.scheduler.fair, scenario.scheduler.hz) == (fair, hz)
    explicit = scenario_from_dict({"scheduler": {"host": "eevdf"}}, profile)
    assert explicit.scheduler.fair == "eevdf"


# Linux-VServer -------------------------------------------------------------------------------
def test_vserver_defaults_follow_the_tick_rate():
    """vx_info_init_sched: tokens_min HZ >> 4, tokens_max HZ >> 1, a new context HZ >> 2; the
    wiki's TokensMin 15 / TokensMax 125 are HZ 250."""
    sched = GuestSchedParams()
    assert sched.vserver_tokens(250) == (15, 125, 62)
    assert sched.vserver_tokens(1000) == (62, 500, 250)
    assert sched.vserver_tokens(100) == (6, 50, 25)
    assert sched.vserver_interval_idle_ticks == 8
    explicit = GuestSchedParams(vserver_tokens_min=20, vserver_tokens_max=40)
    assert explicit.vserver_tokens(1000) == (20, 40, 40)


@pytest.mark.parametrize(("runqueues", "threads", "cpus_worth"), [
    ("global", 1, 1), ("global", 2, 1),     # one bucket per context (VServer 2.0)
    ("per-cpu", 1, 1), ("per-cpu", 2, 2),   # one bucket per context and CPU (2.2 and later)
])
def test_vserver_token_buckets_per_cpu(runqueues, threads, cpus_worth):
    """A hard limit of 1 token per 4 ticks is 25 % of a CPU per bucket: a context busy on two
    CPUs gets twice that with a bucket per CPU, and a held thread is not pulled elsewhere."""
    hard = GuestSchedParams(vserver_hard=True, vserver_fill_rate=1, vserver_interval_ticks=4)
    result = run(_scenario("vserver", [("ctx", hard, CpuHog(threads=threads))], cores=2,
                           duration_us=10_500_000.0, warmup_us=500_000.0, runqueues=runqueues))
    assert _pct(result, "ctx") == pytest.approx(25.0 * cpus_worth, abs=1.0)
