"""Build the SimPy model of a scenario and run it: ``run(scenario, seed) -> RunResult``."""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import simpy

from virtlab.config import GuestSpec, Scenario
from virtlab.cpu import ExecContext
from virtlab.host import Host
from virtlab.lifecycle import WorkloadRunner
from virtlab.paths import IOPath
from virtlab.paths.registry import PATH_CLASSES, build_path
from virtlab.records import CATEGORIES, RequestRecord
from virtlab.rng import Streams
from virtlab.sched.topology import HostScheduler, build_scheduler
from virtlab.stats import WorkloadSummary
from virtlab.trace import NullTracer, Tracer
from virtlab.version import __version__

__all__ = ["PATH_CLASSES", "Model", "GuestModel", "build", "run", "RunResult"]



@dataclass
class GuestModel:
    """A guest while the model runs: its CPUs, its I/O path and its workload runners."""

    spec: GuestSpec
    vcpu: ExecContext
    path: IOPath
    runners: list[WorkloadRunner]


@dataclass
class Model:
    """All components of one run, wired; :meth:`start` starts their processes."""

    env: simpy.Environment
    scenario: Scenario
    host: Host
    guests: list[GuestModel]
    #: The CPU scheduler (None: the foundation's FIFO core pool); ``host.cpu.scheduler``.
    scheduler: HostScheduler | None = None

    def start(self) -> None:
        """Start paths first (their consumers must sleep before work arrives), then workloads."""
        if self.scheduler is not None:
            self.scheduler.start()
        for guest in self.guests:
            guest.path.start()
        for guest in self.guests:
            for runner in guest.runners:
                runner.start()

    @property
    def runners(self) -> list[WorkloadRunner]:
        """Every workload runner of every guest."""
        return [r for g in self.guests for r in g.runners]


def build(env: simpy.Environment, scenario: Scenario, streams: Streams,
          tracer: Tracer | None = None, max_requests: int | None = None, *,
          keep_requests: bool = False) -> Model:
    """Wire the components of ``scenario`` (no process runs until :meth:`Model.start`).

    ``keep_requests`` keeps every completed request object (for per-request records);
    otherwise only the streaming tallies see them.
    """
    host = Host(env, scenario.host, scenario.nic, scenario.disk, scenario.hypervisor, streams,
                tracer)
    ids = itertools.count()
    guests = []
    scheduler = build_scheduler(env, scenario.scheduler, scenario.host.cores, host.tracer)
    host.cpu.scheduler = scheduler
    for spec in scenario.guests:
        vcpu = ExecContext(env, f"{spec.name}.vcpu", spec.vcpus)
        if scheduler is not None:
            scheduler.add_guest(spec.name, spec.approach, spec.sched, spec.vcpus, vcpu)
        path = build_path(spec.approach, host, spec.name, vcpu,
                          scenario.path_params(spec.approach))
        window = (scenario.warmup_us, scenario.duration_us)
        runners = [WorkloadRunner(env, host, spec.name, vcpu, path, workload, streams,
                                  ids.__next__, max_requests, window_us=window,
                                  keep_requests=keep_requests)
                   for workload in spec.workloads]
        guests.append(GuestModel(spec, vcpu, path, runners))
    return Model(env, scenario, host, guests, scheduler)


@dataclass
class RunResult:
    """The outcome of one run, with its provenance.

    ``records`` holds every completed request (warm-up included; summaries apply the window)
    when the run was asked for them (``run(..., records=True)``), else it is empty: the
    summaries are accumulated while the run goes (:class:`virtlab.tally.Tally`).
    ``in_flight`` lists ``(guest, workload, id, arrival_us)`` of requests still in the system
    at ``sim_now_us``; ``in_flight_area`` is each workload's integral of the number in system.
    Per workload scope (``guest.workload``), over the whole run and with or without records:
    ``completed`` counts completions, ``sojourn_us`` sums their ``done - arrival``, and
    ``causality_slack_us`` holds the smallest ``start - arrival`` and ``done - start`` seen
    (both ``>= 0`` for a causal run; ``inf`` when no request was worked on).
    """

    scenario: Scenario
    seed: int
    replication: int
    records: list[RequestRecord]
    in_flight: list[tuple[str, str, int, float]]
    arrived: dict[str, int]
    in_flight_area: dict[str, float]
    cpu_busy_us: dict[str, float]
    cpu_label_us: dict[str, float]
    ring_stats: dict[str, tuple[int, int]]
    notifications: dict[str, int]
    device_busy_us: dict[str, float]
    sim_now_us: float
    wall_s: float
    version: str
    summaries: list[WorkloadSummary] = field(default_factory=list)
    #: Per scheduling node (guest groups, ``kernel``/``dom0``): core time ``cpu_us`` and
    #: policy counters over the measurement window; empty under the FIFO core pool.
    sched_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Per guest whose path keeps ring observations (paravirtual): each ring's occupancy over
    #: time and batch sizes, and kick / interrupt / wake-up counters (docs/paravirtual.md).
    path_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    completed: dict[str, int] = field(default_factory=dict)
    sojourn_us: dict[str, float] = field(default_factory=dict)
    causality_slack_us: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def utilisation(self) -> float:
        """Fraction of the host's core time that was busy over the whole run."""
        total = sum(self.cpu_busy_us.values())
        return total / (self.scenario.host.cores * self.sim_now_us) if self.sim_now_us else 0.0

    def to_frame(self):  # -> pandas.DataFrame (imported lazily: pandas is slow to import)
        """Per-request records as a DataFrame, one row per completed request.

        Needs a run with ``records=True`` (``virtlab ... --records``); raises otherwise rather
        than return an empty frame that looks like a run without requests.
        """
        import dataclasses

        import pandas as pd

        if not self.records and sum(self.completed.values()):
            raise ValueError("this run kept no per-request records; run it with records=True "
                             "(command line: --records)")
        columns = [f.name for f in dataclasses.fields(RequestRecord)]
        return pd.DataFrame([dataclasses.astuple(r) for r in self.records], columns=columns)


def run(scenario: Scenario, seed: int = 0, *, replication: int = 0,
        tracer: Tracer | None = None, max_requests: int | None = None,
        records: bool = False) -> RunResult:
    """Simulate ``scenario`` once with root seed ``seed`` and return the result.

    Parameters
    ----------
    scenario:
        What to simulate.
    seed:
        Root seed; every random stream derives from ``(seed, replication, stream name)``.
    replication:
        Replication index (independent streams for the same seed).
    tracer:
        Receives trace events (default: none).
    max_requests:
        Stop issuing new requests after this many per workload (used by ``virtlab trace``).
    records:
        Keep one :class:`~virtlab.records.RequestRecord` per completed request in
        ``RunResult.records`` (memory grows with the run). Summaries never need them.

    """
    wall_start = time.perf_counter()
    env = simpy.Environment()
    streams = Streams(seed, replication)
    model = build(env, scenario, streams, tracer or NullTracer(), max_requests,
                  keep_requests=records)
    model.start()
    window_open: dict[str, float] = {}
    env.timeout(scenario.warmup_us).callbacks.append(
        lambda _event: window_open.update(_busy_counters(model)))
    if model.scheduler is not None:
        model.scheduler.window_stats(scenario.warmup_us, scenario.duration_us)
    until = scenario.duration_us + scenario.cooldown_us
    env.run(until=until)
    now = env.now
    if model.scheduler is not None:
        model.scheduler.close_window()
    kept: list[RequestRecord] = []
    completed: dict[str, int] = {}
    sojourn: dict[str, float] = {}
    slack: dict[str, tuple[float, float]] = {}
    in_flight: list[tuple[str, str, int, float]] = []
    arrived: dict[str, int] = {}
    area: dict[str, float] = {}
    summaries: list[WorkloadSummary] = []
    window = (scenario.warmup_us, scenario.duration_us)
    for guest in model.guests:
        for runner in guest.runners:
            runner.close()
            kept.extend(r.freeze() for r in runner.completed)
            tally = runner.tally
            completed[runner.scope] = tally.completed
            sojourn[runner.scope] = tally.sojourn_us
            slack[runner.scope] = (tally.min_wait_us, tally.min_service_us)
            in_flight.extend((guest.spec.name, runner.workload.name, r.id, r.arrival_us)
                             for r in runner.in_flight.values())
            arrived[runner.scope] = runner.arrived
            area[runner.scope] = runner.in_flight_area(now)
            summary = tally.summary(
                guest=guest.spec.name, workload=runner.workload.name,
                approach=guest.spec.approach, kind=runner.workload.kind,
                cores=scenario.host.cores)
            if model.scheduler is not None:
                summary = _with_sched_stats(summary, model.scheduler, guest.spec.name, window)
            summary = dataclasses.replace(summary, **_utilisation(model, window_open, window))
            ring_metrics = getattr(guest.path, "summary_metrics", None)
            if ring_metrics is not None:  # paths with observable rings (paravirtual)
                summary = dataclasses.replace(summary, **ring_metrics(now))
            if runner.workload.kind == "block":  # the host disk's limits (shared by guests)
                limits = model.host.disk.limits(now)
                summary = dataclasses.replace(
                    summary, disk_queue_util=limits["queue"],
                    disk_parallelism_util=limits["parallelism"],
                    disk_interface_util=limits["interface"])
            summaries.append(summary)
    rings: dict[str, tuple[int, int]] = {}
    notifications: dict[str, int] = {}
    path_stats: dict[str, dict[str, Any]] = {}
    for guest in model.guests:
        rings.update(guest.path.ring_stats())
        stats_of = getattr(guest.path, "path_stats", None)
        if stats_of is not None:
            path_stats[guest.spec.name] = stats_of(now)
        for loop in guest.path.loops():
            notifications[loop.scope] = loop.notifications
    cpu = model.host.cpu
    return RunResult(
        scenario=scenario, seed=seed, replication=replication, records=kept,
        in_flight=in_flight, arrived=arrived, in_flight_area=area,
        cpu_busy_us=dict(zip(CATEGORIES, cpu.busy_us, strict=True)),
        cpu_label_us=dict(cpu.label_us), ring_stats=rings, notifications=notifications,
        device_busy_us={"disk": model.host.disk.busy_us,
                        "disk.access": model.host.disk.access_busy_us,
                        "disk.interface": model.host.disk.interface.busy_us,
                        "nic.tx": model.host.nic.tx.busy_us,
                        "nic.rx": model.host.nic.rx.busy_us},
        sim_now_us=now, wall_s=time.perf_counter() - wall_start, version=__version__,
        summaries=summaries,
        sched_stats=model.scheduler.window if model.scheduler is not None else {},
        path_stats=path_stats, completed=completed, sojourn_us=sojourn,
        causality_slack_us=slack)


def _with_sched_stats(summary: WorkloadSummary, scheduler: HostScheduler, guest: str,
                      window_us: tuple[float, float]) -> WorkloadSummary:
    """Add the guest's CPU share and CFS bandwidth counters over the window to ``summary``."""
    import dataclasses

    row = scheduler.window.get(scheduler.guest_nodes[guest].name, {})
    span_us = window_us[1] - window_us[0]
    nan = float("nan")
    return dataclasses.replace(
        summary, guest_cpu_pct=100.0 * row.get("cpu_us", nan) / span_us,
        nr_periods=row.get("nr_periods", nan), nr_throttled=row.get("nr_throttled", nan))


def _busy_counters(model: Model) -> dict[str, float]:
    """Busy time so far of the host's shared resources (µs, summed over their units)."""
    host = model.host
    return {"core_utilisation": sum(host.cpu.busy_us), "disk_utilisation": host.disk.busy_us,
            "nic_tx_utilisation": host.nic.tx.busy_us,
            "nic_rx_utilisation": host.nic.rx.busy_us}


def _utilisation(model: Model, window_open: dict[str, float],
                 window_us: tuple[float, float]) -> dict[str, float]:
    """Utilisation of each shared resource over the window (see ``WorkloadSummary``)."""
    span_us = window_us[1] - window_us[0]
    capacity = {"core_utilisation": model.scenario.host.cores,
                "disk_utilisation": model.host.disk.channels.capacity,
                "nic_tx_utilisation": 1, "nic_rx_utilisation": 1}
    now = _busy_counters(model)
    return {name: (now[name] - window_open.get(name, 0.0)) / (span_us * capacity[name])
            for name in now}
