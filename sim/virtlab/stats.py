"""Output analysis: warm-up deletion, per-workload summaries, replication means and t-CIs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from operator import attrgetter

import numpy as np

from virtlab.records import CATEGORIES, EXIT_REASONS, PHASES, RequestRecord

__all__ = ["WorkloadSummary", "summarize_records", "t_quantile", "mean_ci", "METRICS",
           "RESOURCES", "bottleneck"]

# Two-sided Student t quantiles t_{1-(1-c)/2, df}, from the standard table (e.g. NIST/SEMATECH
# e-Handbook 1.3.6.7.2). Beyond df = 120 the normal quantile is used.
_T_TABLE: dict[float, dict[int, float]] = {
    0.90: {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860,
           9: 1.833, 10: 1.812, 12: 1.782, 15: 1.753, 20: 1.725, 25: 1.708, 30: 1.697,
           40: 1.684, 60: 1.671, 120: 1.658},
    0.95: {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
           9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042,
           40: 2.021, 60: 2.000, 120: 1.980},
    0.99: {1: 63.657, 2: 9.925, 3: 5.841, 4: 4.604, 5: 4.032, 6: 3.707, 7: 3.499, 8: 3.355,
           9: 3.250, 10: 3.169, 12: 3.055, 15: 2.947, 20: 2.845, 25: 2.787, 30: 2.750,
           40: 2.704, 60: 2.660, 120: 2.617},
    0.999: {1: 636.619, 2: 31.599, 3: 12.924, 4: 8.610, 5: 6.869, 6: 5.959, 7: 5.408,
            8: 5.041, 9: 4.781, 10: 4.587, 12: 4.318, 15: 4.073, 20: 3.850, 25: 3.725,
            30: 3.646, 40: 3.551, 60: 3.460, 120: 3.373},
}
_Z = {0.90: 1.645, 0.95: 1.960, 0.99: 2.576, 0.999: 3.291}


def t_quantile(confidence: float, df: int) -> float:
    """Two-sided Student t critical value for ``confidence`` in {0.90, 0.95, 0.99, 0.999}.

    Between tabulated degrees of freedom the next *smaller* tabulated df is used, which errs
    on the wide (conservative) side.
    """
    if confidence not in _T_TABLE:
        raise ValueError(f"confidence must be one of {sorted(_T_TABLE)}, got {confidence}")
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    table = _T_TABLE[confidence]
    if df > 120:
        return _Z[confidence]
    usable = [d for d in table if d <= df]
    return table[max(usable)]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and t-CI half-width of independent replications (half-width NaN if fewer than 2)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return float("nan"), float("nan")
    mean = float(data.mean())
    if data.size < 2:
        return mean, float("nan")
    half = t_quantile(confidence, data.size - 1) * float(data.std(ddof=1)) / math.sqrt(data.size)
    return mean, half


@dataclass(frozen=True, slots=True)
class WorkloadSummary:
    """What one run measured for one workload of one guest, over the measurement window."""

    guest: str
    workload: str
    approach: str
    kind: str
    requests: int
    throughput_per_s: float
    throughput_bytes_per_s: float
    latency_mean_us: float
    latency_p50_us: float
    latency_p95_us: float
    latency_p99_us: float
    cpu_guest_us: float
    cpu_exit_us: float
    cpu_backend_us: float
    cpu_host_kernel_us: float
    cpu_total_us: float
    exits_per_request: float
    notifications_per_request: float
    interrupts_per_request: float
    cpu_share: float
    # Exits per request by reason, their CPU time per request, and exits that reached a
    # user-space device model (see records.EXIT_REASONS).
    exits_mmio_per_request: float = float("nan")
    exits_pio_per_request: float = float("nan")
    exits_inject_per_request: float = float("nan")
    exits_eoi_per_request: float = float("nan")
    exits_other_per_request: float = float("nan")
    exits_user_per_request: float = float("nan")
    exit_mmio_us: float = float("nan")
    exit_pio_us: float = float("nan")
    exit_inject_us: float = float("nan")
    exit_eoi_us: float = float("nan")
    exit_other_us: float = float("nan")
    # Mean latency split into records.PHASES (NaN for paths that do not account phases).
    lat_guest_us: float = float("nan")
    lat_exits_us: float = float("nan")
    lat_virt_compute_us: float = float("nan")
    lat_device_model_us: float = float("nan")
    lat_copies_us: float = float("nan")
    lat_host_kernel_us: float = float("nan")
    lat_device_us: float = float("nan")
    lat_interrupt_us: float = float("nan")
    lat_queueing_us: float = float("nan")
    lat_outside_us: float = float("nan")
    # CPU scheduling over the window (NaN under the FIFO core pool): CPU time of the guest's
    # scheduling group in % of one core, and its CFS bandwidth periods and throttled periods.
    guest_cpu_pct: float = float("nan")
    nr_periods: float = float("nan")
    nr_throttled: float = float("nan")
    # Paravirtual rings (NaN for other paths), over the whole run: time-weighted mean backlog
    # summed over the guest's rings (requests waiting for the backend, completions waiting for
    # the guest), and mean entries taken per backend run or guest poll.
    ring_occupancy_mean: float = float("nan")
    ring_batch_mean: float = float("nan")
    # Utilisation of the host's shared resources over the window (the same for every workload
    # of a run): busy time over span x capacity, for the cores, the disk's channels and the
    # NIC's two links. Work is counted when it is accounted, so at the window's edges a piece
    # of work falls entirely on one side. See :func:`bottleneck`.
    core_utilisation: float = float("nan")
    disk_utilisation: float = float("nan")
    nic_tx_utilisation: float = float("nan")
    nic_rx_utilisation: float = float("nan")
    # The host's disk (block workloads only, NaN otherwise), over the whole run: how busy each
    # of its limits was (virtlab.devices.Disk.limits): the busiest hardware queue, the
    # channels (internal parallelism) and the interface, as fractions.
    disk_queue_util: float = float("nan")
    disk_parallelism_util: float = float("nan")
    disk_interface_util: float = float("nan")


#: Exit reasons as reported (the path's own reasons plus "other").
REPORTED_EXIT_REASONS = (*EXIT_REASONS, "other")


_MEAN_FIELDS = (tuple(f"exits_{r}" for r in REPORTED_EXIT_REASONS)
                + tuple(f"exit_{r}_us" for r in REPORTED_EXIT_REASONS)
                + ("exits_user",) + tuple(f"lat_{p}_us" for p in PHASES))
_SUMMARY_NAMES = (tuple(f"exits_{r}_per_request" for r in REPORTED_EXIT_REASONS)
                  + tuple(f"exit_{r}_us" for r in REPORTED_EXIT_REASONS)
                  + ("exits_user_per_request",) + tuple(f"lat_{p}_us" for p in PHASES))
_GET_MEAN_FIELDS = attrgetter(*_MEAN_FIELDS)


def _exit_and_phase_means(rows: Sequence[RequestRecord]) -> dict[str, float]:
    """Per-request means of the exit-reason and latency-phase fields of ``rows``."""
    means = np.array(list(map(_GET_MEAN_FIELDS, rows)), dtype=float).mean(axis=0)
    return {name: float(value) for name, value in zip(_SUMMARY_NAMES, means, strict=True)}


#: Numeric metrics of a summary, averaged across replications.
METRICS = tuple(f.name for f in fields(WorkloadSummary)
                if f.name not in ("guest", "workload", "approach", "kind"))


def summarize_records(records: Sequence[RequestRecord], *, guest: str, workload: str,
                      approach: str, kind: str, window_us: tuple[float, float],
                      cores: int) -> WorkloadSummary:
    """Summarise the requests of one workload that completed inside ``window_us``."""
    start, end = window_us
    span_s = (end - start) / 1e6
    rows = [r for r in records if start <= r.done_us <= end]
    n = len(rows)
    if n == 0:
        nan = float("nan")
        return WorkloadSummary(guest, workload, approach, kind, 0, 0.0, 0.0, nan, nan, nan,
                               nan, nan, nan, nan, nan, nan, nan, nan, nan, 0.0)
    latency = np.fromiter((r.done_us - r.arrival_us for r in rows), float, n)
    cpu = np.array([[r.cpu_guest_us, r.cpu_exit_us, r.cpu_backend_us, r.cpu_host_kernel_us]
                    for r in rows])
    cpu_mean = cpu.mean(axis=0)
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    assert len(CATEGORIES) == cpu.shape[1]
    return WorkloadSummary(
        guest=guest, workload=workload, approach=approach, kind=kind, requests=n,
        throughput_per_s=n / span_s,
        throughput_bytes_per_s=sum(r.nbytes for r in rows) / span_s,
        latency_mean_us=float(latency.mean()), latency_p50_us=float(p50),
        latency_p95_us=float(p95), latency_p99_us=float(p99),
        cpu_guest_us=float(cpu_mean[0]), cpu_exit_us=float(cpu_mean[1]),
        cpu_backend_us=float(cpu_mean[2]), cpu_host_kernel_us=float(cpu_mean[3]),
        cpu_total_us=float(cpu_mean.sum()),
        exits_per_request=sum(r.exits for r in rows) / n,
        notifications_per_request=sum(r.notifications for r in rows) / n,
        interrupts_per_request=sum(r.interrupts for r in rows) / n,
        cpu_share=float(cpu.sum()) / (cores * (end - start)),
        **_exit_and_phase_means(rows),
    )


#: Shared resources whose utilisation a summary reports: (name, summary field).
RESOURCES = (("host cores", "core_utilisation"), ("disk", "disk_utilisation"),
             ("NIC transmit link", "nic_tx_utilisation"),
             ("NIC receive link", "nic_rx_utilisation"))


def bottleneck(values: dict[str, float] | WorkloadSummary,
               threshold: float = 0.9) -> tuple[str, float] | None:
    """The most utilised shared resource if it is busy at least ``threshold`` of the time.

    ``values`` is a summary or a mapping of its field names (e.g. an experiment entry's
    replication means). Returns ``(resource name, utilisation)``, or ``None`` when nothing
    shared is that busy (the limit is then the workload's own concurrency, a context such as a
    vCPU or backend thread, or the open-loop rate).
    """
    get = values.get if isinstance(values, dict) else (
        lambda name, default=math.nan: getattr(values, name, default))
    best: tuple[str, float] | None = None
    for name, field_name in RESOURCES:
        value = get(field_name, math.nan)
        if value == value and value >= threshold and (best is None or value > best[1]):
            best = (name, value)
    return best
