"""``virtlab demo cgroups --cases``: the scheduling cases on the real kernel and in the simulator.

For each case of :mod:`virtlab.linux.cases` this makes the cgroups (weights and quotas written
to the real control files), forks one CPU-bound process per task, moves it into its group and
pins it to its CPU with ``sched_setaffinity``, lets it run for a short warm-up and then measures
a window: the CPU time of every task from ``/proc/PID/schedstat`` (per task, so it works on
cgroup v1 and v2 alike and shows which CPU the time came from) and the throttling counters from
the group's ``cpu.stat``. The simulator runs the same case in-process, and the table puts
measured, simulated and the kernel's rule side by side.

A process and a thread are the same thing to the scheduler (a task), so a group's "two threads"
are two processes here. Each task stops by itself after a bounded time even if everything else
failed, dies with its parent (``PR_SET_PDEATHSIG``), and is killed and reaped at the end of its
case; the groups are removed with their session (:class:`virtlab.linux.cgroups.CgroupSession`).
The sessions' parent group gets the demo's parent weight, so that other busy processes on a
shared machine take little from the cases; what they do take is printed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from virtlab.linux import cgroups, procs
from virtlab.linux import libc as _c
from virtlab.linux.cases import (
    CASES,
    Case,
    Expect,
    GroupSpec,
    Row,
    find_case,
    side_by_side,
    simulate,
)
from virtlab.linux.channel import LineReader, error_message, raise_remote, write_line
from virtlab.linux.demo_cgroups import cpu_time_ns
from virtlab.linux.kernel import KernelInfo, kernel_info
from virtlab.linux.text import Teller

__all__ = ["CaseResult", "Measured", "cpus_needed_reason", "measure", "rows_for", "run_cases",
           "shares_from_usage"]

WARMUP_S = 0.3  # before the window: tasks started, first quota periods over
#: Weight of each case's parent group, in v2 units (the v2 maximum; v1 cpu.shares 102400): 100x
#: any other busy process. The weight of a group is split over the CPUs its tasks run on, so at
#: the classic demo's 10x a case on a 2-CPU machine with three busy neighbours per CPU got only
#: about 70 % of each CPU, and a 1.5-CPU quota never bound. Only for the few seconds of a case.
CASE_PARENT_WEIGHT = 10000


@dataclass(frozen=True)
class Measured:
    """What the real kernel gave one case.

    Attributes
    ----------
    pct:
        Per group: share of contention (normalised cases) or % of a CPU (quotas).
    cpu_pct:
        Per CPU index of the case: % of that CPU's wall-clock time the case's tasks got.
    throttled:
        Per group with a quota: (``nr_throttled``, ``nr_periods``) over the window.
    window_s:
        Length of the window.
    leftovers:
        Groups that could not be removed (should be empty).
    ran_s, throttled_s:
        Per group with a quota: CPU seconds its tasks ran, and seconds it spent throttled
        (``cpu.stat`` ``throttled_usec`` or ``throttled_time``, summed over CPUs by the
        kernel), both over the window.

    """

    pct: dict[str, float]
    cpu_pct: dict[int, float]
    throttled: dict[str, tuple[int, int]]
    window_s: float
    leftovers: list[str]
    ran_s: dict[str, float] = field(default_factory=dict)
    throttled_s: dict[str, float] = field(default_factory=dict)

    def waiting_s(self, group: str, tasks: int) -> float:
        """Seconds ``tasks`` always-runnable tasks of a quota group spent waiting for a CPU.

        That is, neither running nor throttled: runnable, waiting for a CPU that other
        processes had.
        """
        return max(0.0, tasks * self.window_s - self.ran_s[group] - self.throttled_s[group])


def shares_from_usage(usage: Sequence[tuple[str, int, float]], window_s: float,
                      normalise: bool) -> tuple[dict[str, float], dict[int, float]]:
    """Turn per-task CPU seconds into group percentages and per-CPU totals.

    Parameters
    ----------
    usage:
        ``(group, CPU index, CPU seconds in the window)`` for each task.
    window_s:
        The window's wall-clock length.
    normalise:
        Count each CPU's time that went to these tasks as 100 % (shares of contention);
        otherwise divide by the window (% of a CPU).

    """
    per_cpu: dict[int, float] = defaultdict(float)
    for _group, cpu, seconds in usage:
        per_cpu[cpu] += seconds
    pct: dict[str, float] = defaultdict(float)
    for group, cpu, seconds in usage:
        whole = per_cpu[cpu] if normalise else window_s
        pct[group] += 100.0 * seconds / whole if whole > 0 else 0.0
    return dict(pct), {cpu: 100.0 * seconds / window_s for cpu, seconds in per_cpu.items()}


def cpus_needed_reason(case: Case, available: int) -> str | None:
    """Why ``case`` cannot run with ``available`` CPUs, or ``None`` if it can."""
    if case.cpus <= available:
        return None
    return (f"needs {case.cpus} CPUs, this process may run on {available} "
            "(os.sched_getaffinity)")


def _task(procs_file: str, cpu: int, run_ms: float, sleep_ms: float, limit_s: float,
          write_fd: int) -> int:
    """A task's life in the child: into its group, onto its CPU, say so, then burn CPU."""
    try:
        with open(procs_file, "w", encoding="ascii") as handle:
            handle.write(str(os.getpid()))  # moves this process into the group
        os.sched_setaffinity(0, {cpu})
        write_line(write_fd, {"kind": "ready"})
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
        write_line(write_fd, error_message(exc, "join the group and pin the CPU"))
        return 1
    os.close(write_fd)
    deadline = time.monotonic() + limit_s  # the safety net: the parent kills us long before
    if run_ms <= 0:
        while time.monotonic() < deadline:
            pass
        return 0
    while time.monotonic() < deadline:
        goal = time.thread_time_ns() + round(run_ms * 1e6)  # run_ms of CPU time, not wall time
        while time.thread_time_ns() < goal:
            pass
        time.sleep(sleep_ms / 1000)
    return 0


def measure(case: Case, layout: cgroups.CgroupLayout, cpus: Sequence[int], seconds: float,
            timeout_s: float = 20.0, tell: Teller | None = None) -> Measured:
    """Run ``case`` on the real kernel for a window of ``seconds``; return what it got.

    ``cpus`` are the real CPU numbers the case's CPU indices 0, 1, ... stand for. Every task is
    gone and every group removed when this returns or raises.
    """
    limit_s = WARMUP_S + seconds + timeout_s  # a task's own stop, should everything else fail
    _c.preload()  # libc before fork: the child calls prctl at once
    me = os.getpid()
    tasks: list[tuple[str, int, int]] = []  # (group, CPU index, pid)
    with procs.signals_as_interrupts(), cgroups.CgroupSession(layout) as session, \
            contextlib.ExitStack() as stack:
        settings = [session.parent_group.set_weight(CASE_PARENT_WEIGHT)]
        groups = {}
        for spec in case.groups:
            group = session.group(spec.name)
            written = [group.set_weight(spec.weight)]
            if spec.quota_ms:
                written.append(group.set_quota(round(spec.quota_ms * 1000),
                                               round(spec.period_ms * 1000)))
            groups[spec.name] = group
            settings.append(f"{spec.name}: " + "; ".join(written))
        if tell:
            tell.show("cgroups", f"under {session.parent.name}/ (parent {settings[0]})")
            for line in settings[1:]:
                tell.show("  group", line)
        read_fd, write_fd = os.pipe()
        stack.callback(os.close, read_fd)
        try:
            for spec in case.groups:
                for index in spec.cpus:
                    pid = procs.fork_child("virtlab-case")
                    if pid == 0:
                        os.close(read_fd)

                        def body(spec: GroupSpec = spec, index: int = index) -> int:
                            procs.die_with_parent(me)
                            return _task(groups[spec.name].procs_file, cpus[index], spec.run_ms,
                                         spec.sleep_ms, limit_s, write_fd)

                        procs.child_main(body, name="virtlab-case")
                    stack.callback(procs.kill_and_reap, pid)
                    tasks.append((spec.name, index, pid))
        finally:
            os.close(write_fd)
        reader = LineReader(read_fd)
        deadline = time.monotonic() + timeout_s
        for _ in tasks:
            message = reader.read(deadline)
            if message is None:
                raise RuntimeError(f"case {case.name}: a task exited before it was ready")
            if message["kind"] == "error":
                raise_remote(message)
        time.sleep(WARMUP_S)
        quota_groups = {spec.name: groups[spec.name] for spec in case.groups if spec.quota_ms}
        stats_before = {name: group.throttling() for name, group in quota_groups.items()}
        before = [cpu_time_ns(pid) for _, _, pid in tasks]
        start = time.monotonic()
        time.sleep(seconds)
        after = [cpu_time_ns(pid) for _, _, pid in tasks]
        window_s = time.monotonic() - start
        stats_after = {name: group.throttling() for name, group in quota_groups.items()}
        stack.close()  # kill and reap the tasks before the session removes the groups
    usage = [(group, index, (end - begin) / 1e9)
             for (group, index, _), begin, end in zip(tasks, before, after, strict=True)]
    pct, cpu_pct = shares_from_usage(usage, window_s, case.normalise)
    throttled = {name: (stats_after[name]["nr_throttled"] - stats_before[name]["nr_throttled"],
                        stats_after[name]["nr_periods"] - stats_before[name]["nr_periods"])
                 for name in quota_groups}
    ran_s = {name: sum(seconds for group, _, seconds in usage if group == name)
             for name in quota_groups}
    throttled_s = {name: (stats_after[name]["throttled_us"]
                          - stats_before[name]["throttled_us"]) / 1e6 for name in quota_groups}
    return Measured(pct, cpu_pct, throttled, window_s, session.leftovers, ran_s, throttled_s)


@dataclass(frozen=True)
class CaseResult:
    """One case: measured (``None`` when skipped, with ``skipped`` saying why) and simulated."""

    case: Case
    measured: Measured | None
    simulated_pct: dict[str, float]
    simulated_throttled: dict[str, float]
    expected: dict[str, Expect]
    skipped: str = ""


def rows_for(result: CaseResult) -> list[Row]:
    """The table rows of one case: one per group, one per quota group's throttled periods."""
    measured = result.measured
    rows = [Row(result.case.name, spec.name, measured.pct.get(spec.name) if measured else None,
                result.simulated_pct.get(spec.name), result.expected[spec.name])
            for spec in result.case.groups]
    for name, expect in result.case.throttling.items():
        got = None
        if measured and measured.throttled.get(name, (0, 0))[1]:
            throttled, periods = measured.throttled[name]
            got = 100.0 * throttled / periods
        rows.append(Row(result.case.name, f"{name}: periods throttled", got,
                        result.simulated_throttled.get(name), expect))
    return rows


def _sim_settings(info: KernelInfo, layout: cgroups.CgroupLayout) -> dict[str, object]:
    """The simulator's settings for this kernel (its HZ only if the model offers it)."""
    from virtlab.sched.params import HZ_CHOICES

    return {"fair": info.fair or "eevdf", "hz": info.hz if info.hz in HZ_CHOICES else None,
            "hrtick": bool(info.hrtick), "cgroup": layout.version}


def run_cases(names: Sequence[str] | None = None, seconds: float = 2.0,
              timeout_s: float = 20.0, out: Callable[[str], None] = print) -> list[CaseResult]:
    """Run the cases (all, or those named) on this kernel and in the simulator; print the table.

    A case that needs more CPUs than this process may use is simulated but not measured, and
    the reason is printed in its place.
    """
    chosen = [find_case(name) for name in names] if names else list(CASES)
    tell = Teller(out)
    info = kernel_info()
    layout = cgroups.detect()
    cpus = sorted(os.sched_getaffinity(0))
    sim = _sim_settings(info, layout)
    tell.title("virtlab demo cgroups --cases: the real kernel and the simulator, side by side",
               "Each case makes cgroups with the weights and quotas shown, starts one busy "
               "process per task pinned to its CPU, and measures each task's CPU time "
               "(/proc/PID/schedstat) over the same window; the simulator runs the same case. "
               f"This machine: {info.describe()} {layout.describe()}; CPUs {cpus}.")
    hz = f"HZ {info.hz}" if sim["hz"] else (
        f"the profile's HZ (this kernel's {info.hz} is not one the model offers)" if info.hz
        else "the profile's HZ (this kernel's is unknown)")
    tell.para(f"The simulator runs {sim['fair']} with {hz}, hrtick "
              f"{'on' if sim['hrtick'] else 'off'}, per-CPU run queues, cgroup "
              f"v{layout.version}. Shares of contention count each CPU's time that went to the "
              "case's tasks as 100 %; quotas are % of a CPU of wall-clock time.")
    results = []
    for number, case in enumerate(chosen, 1):
        tell.step(f"Case {number} of {len(chosen)}: {case.name}: {case.title}.",
                  f"The kernel's rule: {case.rule}.")
        simulated = simulate(case, seconds=3.0, **sim)  # type: ignore[arg-type]
        expected = case.expect(info.fair)
        reason = cpus_needed_reason(case, len(cpus))
        measured = None
        if reason:
            tell.show("not measured", reason)
        else:
            measured = measure(case, layout, cpus[:case.cpus], seconds, timeout_s, tell)
            got = ", ".join(f"{share:.1f} % of CPU {cpus[index]}"
                            for index, share in sorted(measured.cpu_pct.items()))
            tell.show("the case's tasks got", f"{got} over {measured.window_s:.2f} s"
                      + (" (the rest went to other processes)" if case.normalise else ""))
            for name, (throttled, periods) in measured.throttled.items():
                tell.show(f"{name} throttled in", f"{throttled} of {periods} periods "
                          "(cpu.stat nr_throttled / nr_periods over the window)")
                spec = next(spec for spec in case.groups if spec.name == name)
                # A busy group alone on its CPUs is always runnable: what it neither ran nor
                # was throttled, it waited for a CPU that other processes had.
                if not spec.run_ms and len(case.groups) == 1:
                    tell.show(f"{name}'s {spec.threads} task(s)",
                              f"ran {measured.ran_s[name]:.3f} s, throttled "
                              f"{measured.throttled_s[name]:.3f} s (cpu.stat), runnable but "
                              f"waiting for the CPU {measured.waiting_s(name, spec.threads):.3f} s")
            if measured.leftovers:
                tell.show("leftover groups", ", ".join(measured.leftovers))
        result = CaseResult(case, measured, simulated.pct, simulated.throttled_pct, expected,
                            reason or "")
        tell.block(side_by_side(rows_for(result)))
        results.append(result)
    tell.step("All cases: measured on this machine, simulated, and the kernel's rule.",
              "Percent of a CPU; 'periods throttled' is nr_throttled / nr_periods. The machine "
              "is shared, so a measurement is off by a few points from run to run.")
    tell.block(side_by_side([row for result in results for row in rows_for(result)]))
    return results

