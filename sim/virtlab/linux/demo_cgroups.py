"""``virtlab demo cgroups``: containers on one shared scheduler, with weights and a quota.

Containers share the host kernel's CPU scheduler; cgroups are how a runtime divides it. Three
CPU-bound containers show the two knobs:

* **weights** (``cpu.weight`` / ``cpu.shares``): containers *a* (300) and *b* (100) spin on the
  same CPU. While both want it, the scheduler gives them time in proportion to their weights,
  3:1, so about 75 % and 25 %. A weight is only a share of contention: alone, *b* would get 100 %.
* **quota** (``cpu.max`` / ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``): container *q* spins
  alone on another CPU but may use only 20 ms in every 100 ms period. It gets about 20 % of that
  CPU even though nothing else wants it, and is throttled in (nearly) every period.

CPU time is read from ``/proc/PID/schedstat`` (nanoseconds on the CPU) of each container's PID 1
at the start and end of the same window, so the shares are what the kernel really gave.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from virtlab.linux import cgroups, procs
from virtlab.linux import libc as _c
from virtlab.linux.container import CONTAINER_FLAGS, Container, ContainerSpec, Inside
from virtlab.linux.text import Teller, table

__all__ = ["CgroupDemoResult", "cpu_cgroup", "cpu_time_ns", "run_demo"]

PARENT_WEIGHT = 1000


def cpu_time_ns(pid: int) -> int:
    """CPU time a process has used so far, in ns (schedstat; falls back to clock ticks)."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def cpu_cgroup(pid: int | str) -> str:
    """Return the ``cpu`` line of ``/proc/PID/cgroup`` (v1), or the ``0::`` line (v2)."""
    with open(f"/proc/{pid}/cgroup", encoding="ascii") as handle:
        lines = handle.read().splitlines()
    for line in lines:
        _, controllers, _ = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return line
    return next((line for line in lines if line.startswith("0::")), "?")


def _spin(cpu: int, limit_s: float) -> Callable[[Inside], Any]:
    """Make a payload that pins itself to ``cpu`` and burns it (for at most ``limit_s``)."""

    def payload(inside: Inside) -> int:
        os.sched_setaffinity(0, {cpu})
        inside.send("spinning", cgroup=cpu_cgroup("self"))
        deadline = time.monotonic() + limit_s  # a safety net: the parent kills us long before
        count = 0
        while time.monotonic() < deadline:
            count += 1
        return count

    return payload


@dataclass(frozen=True)
class CgroupDemoResult:
    """What the containers got.

    Attributes
    ----------
    share_a, share_b:
        Fractions of the CPU time *a* and *b* got together (expected w_a/(w_a+w_b) and the rest).
    share_q:
        Fraction of one CPU that *q* got over the window (expected quota/period).
    nr_periods, nr_throttled:
        Periods that elapsed for *q* during the window, and in how many it was throttled.
    leftovers:
        Groups that could not be removed (should be empty).

    """

    share_a: float
    share_b: float
    share_q: float
    nr_periods: int
    nr_throttled: int
    window_s: float
    version: int
    leftovers: list[str]


def run_demo(seconds: float = 3.0, weights: tuple[int, int] = (300, 100),
             quota_ms: float = 20.0, period_ms: float = 100.0, timeout_s: float = 20.0,
             out: Callable[[str], None] = print) -> CgroupDemoResult:
    """Run the demo and print it.

    Parameters
    ----------
    seconds:
        Measurement window in s (each experiment).
    weights:
        v2-style weights for *a* and *b* (1..10000; 100 is the default).
    quota_ms, period_ms:
        CPU time *q* may use per period, both in ms.
    timeout_s:
        Deadline for the containers to start.
    out:
        Where the text goes.

    """
    tell = Teller(out)
    layout = cgroups.detect()
    cpus = sorted(os.sched_getaffinity(0))
    shared_cpu, quota_cpu = cpus[0], cpus[1] if len(cpus) > 1 else cpus[0]
    quota_us, period_us = round(quota_ms * 1000), round(period_ms * 1000)
    tell.title("virtlab demo cgroups: containers on one shared CPU scheduler",
               "Containers do not get virtual CPUs; their processes are ordinary tasks on the "
               "host's scheduler. A cgroup groups them so that the scheduler can share CPU time "
               f"between groups. This machine has {layout.describe()}.")
    with procs.signals_as_interrupts(), cgroups.CgroupSession(layout) as session, \
            contextlib.ExitStack() as stack:
        tell.step(f"Create three groups under {session.parent}/ and set their CPU knobs.",
                  "A group is just a directory; the kernel fills it with control files. The "
                  "name is unique to this run, and the directory is removed at the end.")
        # Weight the parent 10x the default: on a shared machine other busy processes would
        # otherwise take part of "our" CPUs and blur the split (and q's throttling) we measure.
        tell.show("parent", session.parent_group.set_weight(PARENT_WEIGHT) +
                  f"   (weight {PARENT_WEIGHT}: 10x any other busy process on the machine)")
        group_a, group_b, group_q = (session.group(name) for name in "abq")
        tell.show("a", group_a.set_weight(weights[0]) + f"   (weight {weights[0]})")
        tell.show("b", group_b.set_weight(weights[1]) + f"   (weight {weights[1]})")
        tell.show("q", group_q.set_quota(quota_us, period_us))
        tell.step("Start three containers, each inside its group.",
                  "Each launcher writes its own PID into its group's cgroup.procs *before* "
                  "unshare(... | CLONE_NEWCGROUP) and fork, so PID 1 starts inside the group. The "
                  "cgroup namespace makes the group look like the root from inside.")
        limit_s = seconds * 2 + timeout_s  # the spin's own stop, should everything else fail
        placements = {"a": (group_a, shared_cpu), "b": (group_b, shared_cpu),
                      "q": (group_q, quota_cpu)}
        containers: dict[str, Container] = {}
        for name, (group, cpu) in placements.items():
            spec = ContainerSpec(hostname=f"ctr-{name}", flags=CONTAINER_FLAGS |
                                 _c.CLONE_NEWCGROUP, cgroup_procs=(group.procs_file,))
            containers[name] = stack.enter_context(
                Container(spec, _spin(cpu, limit_s), timeout_s=timeout_s))
        for name, ctr in containers.items():
            seen = ctr.wait_for("spinning")["cgroup"]
            tell.show(f"container {name}", f"host PID {ctr.pid1} on CPU {placements[name][1]}; "
                      f"the host sees '{cpu_cgroup(ctr.pid1)}', inside it reads '{seen}'")
        tell.step(f"Measure CPU time for {seconds:g} s.",
                  f"a and b both spin on CPU {shared_cpu}, so they compete; q spins on CPU "
                  f"{quota_cpu} where nothing else of ours runs. Same window for all three.")
        time.sleep(0.2)  # let the quota's first period settle
        before = {name: cpu_time_ns(ctr.pid1) for name, ctr in containers.items()}
        throttle_before = group_q.throttling()
        start = time.monotonic()
        time.sleep(seconds)
        used = {name: cpu_time_ns(ctr.pid1) - before[name] for name, ctr in containers.items()}
        window_s = time.monotonic() - start
        throttle_after = group_q.throttling()
        for ctr in containers.values():
            ctr.close()
    periods = throttle_after["nr_periods"] - throttle_before["nr_periods"]
    throttled = throttle_after["nr_throttled"] - throttle_before["nr_throttled"]
    pair = max(used["a"] + used["b"], 1)
    result = CgroupDemoResult(
        share_a=used["a"] / pair, share_b=used["b"] / pair,
        share_q=used["q"] / (window_s * 1e9), nr_periods=periods, nr_throttled=throttled,
        window_s=window_s, version=layout.version, leftovers=session.leftovers)
    expected_a = weights[0] / sum(weights)
    tell.step("What they really got.")
    tell.block(table(
        ("container", "setting", "CPU time", "share", "expected"),
        [("a", f"weight {weights[0]}", f"{used['a'] / 1e9:.2f} s",
          f"{result.share_a:.1%} of a+b", f"{expected_a:.1%}"),
         ("b", f"weight {weights[1]}", f"{used['b'] / 1e9:.2f} s",
          f"{result.share_b:.1%} of a+b", f"{1 - expected_a:.1%}"),
         ("q", f"quota {quota_ms:g} ms / {period_ms:g} ms", f"{used['q'] / 1e9:.2f} s",
          f"{result.share_q:.1%} of CPU {quota_cpu}", f"{quota_us / period_us:.1%}")]))
    tell.show("q was throttled in", f"{throttled} of {periods} periods "
              f"(cpu.stat nr_throttled / nr_periods over the window)")
    tell.show("a and b together got", f"{pair / (window_s * 1e9):.1%} of CPU {shared_cpu}")
    tell.para("Weights divide contention, they do not cap: run b alone and it gets the whole "
              "CPU. A quota caps even an idle machine. The simulator's container path models "
              "both; this is the real kernel doing it.", indent="   ")
    tell.step("Clean up.", "Each container's PID 1 was killed (which ends its namespaces) and "
              "reaped; then the empty groups were removed with rmdir.")
    tell.show("leftover groups", ", ".join(result.leftovers) or "none")
    return result
