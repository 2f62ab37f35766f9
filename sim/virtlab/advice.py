"""Warnings about results that need care: each one line, saying what to do about it.

Three kinds, all computed from a finished comparison and its scenario (nothing here runs the
model):

* **thin rows** -- a row resting on too few requests: none at all, fewer than
  :data:`MIN_REQUESTS_PER_REPLICATION` per replication, or a 95 % confidence interval of its
  throughput or mean latency wider than :data:`MAX_RELATIVE_HALF_WIDTH` of the mean. The fix
  is a longer window (``--duration``) or more replications (``-r``). A busy loop (kind
  ``cpu``) is exempt from the counts: its measure, the CPU share, is sampled continuously.
* **ignored settings** -- a workload field its loop does not read (``rate_per_s`` in a closed
  loop; ``in_flight``, ``iodepth``/``jobs`` or ``connections`` in an open loop) set away from
  its default, a changed parameter of an approach no guest of a ``run`` uses, or several NIC
  queues (``nic.queues``) for a paravirtual or emulated guest, whose NIC has one.
* **link- or device-bound rows** -- a workload whose host device (the disk for block I/O, a NIC
  link for network workloads) is the bottleneck (:func:`virtlab.stats.bottleneck`): equal
  throughput across approaches then means the device is saturated, not that virtualization
  is free, so the ratio to native of 1.0 says "not the bottleneck".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["comparison_warnings", "thin_rows", "ignored_settings", "device_bound_rows",
           "MIN_REQUESTS_PER_REPLICATION", "MAX_RELATIVE_HALF_WIDTH", "BOUND_THRESHOLD"]

#: Fewer completed requests per replication than this, and a row's percentiles and means rest
#: on too little data (a p99 needs at least 100 samples to exist at all).
MIN_REQUESTS_PER_REPLICATION = 100
#: A 95 % CI half-width above this fraction of the mean (throughput or mean latency) is noise.
MAX_RELATIVE_HALF_WIDTH = 0.10
#: Utilisation from which a shared device counts as the bottleneck (the "Disk limits" table's
#: own threshold, virtlab.devices.BINDING_UTILISATION, and virtlab.stats.bottleneck's default).
BOUND_THRESHOLD = 0.9
#: The disk's limits as the "Disk limits" table reports them (fraction busy over the run).
_DISK_LIMIT_FIELDS = ("disk_queue_util", "disk_parallelism_util", "disk_interface_util")

#: Workload fields only one kind of loop reads: loop -> (field, ...).
_LOOP_ONLY_FIELDS = {"closed": ("rate_per_s",),
                     "open": ("in_flight", "iodepth", "jobs", "connections")}
_PATH_TABLES = ("native", "container", "passthrough", "paravirtual", "emulated")


def _label(entry: Any) -> str:
    return f"{entry.guest}.{entry.workload} ({entry.approach})"


def thin_rows(comparison: Any, scenario: Any, replications: int) -> list[str]:
    """Rows resting on too few requests, each with the flag that fixes it."""
    out = []
    window = f"[{scenario.warmup_us:g}, {scenario.duration_us:g}] µs"
    for entry in comparison.entries:
        if entry.error is not None:
            continue
        requests = entry.means.get("requests", math.nan)
        if entry.kind == "cpu" and requests > 0:
            continue  # a busy loop's measure is its CPU share, sampled all the time
        if requests == 0:
            out.append(f"{_label(entry)}: no request completed in the measurement window "
                       f"{window}, so its rates are 0; lengthen --duration or check the "
                       f"workload (e.g. a tiny message_bytes or a huge window)")
            continue
        wide = []
        for metric, name in (("throughput_per_s", "req/s"), ("latency_mean_us", "mean µs")):
            mean, half = entry.means.get(metric, math.nan), entry.half_widths.get(metric, math.nan)
            if mean > 0 and half == half and half > MAX_RELATIVE_HALF_WIDTH * mean:
                wide.append(f"{name} ±{half / mean:.0%} of the mean")
        if requests < MIN_REQUESTS_PER_REPLICATION:
            more = "; a wide CI too: " + ", ".join(wide) if wide else ""
            out.append(f"{_label(entry)}: only {requests:.3g} requests per replication (fewer "
                       f"than {MIN_REQUESTS_PER_REPLICATION}){more}; its numbers are noise: "
                       f"raise --duration (the window is {window})")
        elif wide:
            out.append(f"{_label(entry)}: 95 % CI wider than {MAX_RELATIVE_HALF_WIDTH:.0%} of "
                       f"the mean ({', '.join(wide)}, {replications} replications); raise -r "
                       f"or --duration")
    return out


def ignored_settings(scenario: Any, base: Any = None,
                     approaches: Sequence[str] | None = ()) -> list[str]:
    """Settings the run does not read.

    A workload field only the other loop reads, set away from its default; and, when
    ``approaches`` is None (the guests keep their own, as ``run`` does), a parameter of an
    approach no guest uses that differs from ``base``.
    """
    out = []
    for g_index, guest in enumerate(scenario.guests):
        for w_index, workload in enumerate(guest.workloads):
            default = type(workload)()
            for name in _LOOP_ONLY_FIELDS.get(workload.loop, ()):
                if not hasattr(workload, name):
                    continue
                value = getattr(workload, name)
                if value != getattr(default, name):
                    path = f"guests[{g_index}].workloads[{w_index}]"
                    other = "open" if workload.loop == "closed" else "closed"
                    out.append(f"{path}.{name} = {value:g} is ignored: the workload runs in "
                               f"{workload.loop} loop (set {path}.loop = \"{other}\" to use "
                               f"it, or leave it at its default, {getattr(default, name):g})")
    queues = scenario.nic.queues
    running = ({g.approach for g in scenario.guests} if approaches is None
               else set(approaches))
    single = sorted(running & {"paravirtual", "emulated"})
    if queues > 1 and single:
        out.append(f"nic.queues = {queues} is ignored by {' and '.join(single)}: their NIC has "
                   f"one receive queue in the model (native, container and passthrough use "
                   f"{queues})")
    if approaches is None and base is not None:
        used = {g.approach for g in scenario.guests}
        for table in _PATH_TABLES:
            if table in used:
                continue
            now, before = getattr(scenario, table).to_dict(), getattr(base, table).to_dict()
            changed = sorted(k for k in now if now[k] != before.get(k))
            if changed:
                out.append(f"{table}.{changed[0]}"
                           + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
                           + f" is ignored: no guest uses the {table} approach (guests use "
                             f"{', '.join(sorted(used))})")
    return out


def _device_fields(kind: str) -> dict[str, float] | None:
    """The utilisation fields of the devices a workload kind goes through (None: none)."""
    if kind == "block":
        return {"disk_utilisation": 0.0}
    if kind == "cpu":
        return None
    return {"nic_tx_utilisation": 0.0, "nic_rx_utilisation": 0.0}


def device_bound_rows(comparison: Any, threshold: float = BOUND_THRESHOLD) -> list[str]:
    """One line per guest workload whose device (disk or NIC link) limits some approach."""
    from virtlab.stats import bottleneck

    groups: dict[tuple[str, str], list[tuple[str, str, float]]] = {}
    for entry in comparison.entries:
        fields = _device_fields(entry.kind)
        if entry.error is not None or fields is None:
            continue
        if entry.kind == "block":
            # The disk's verdict is the "Disk limits" table's (its busiest limit over the run),
            # so that the warning and the table never disagree.
            value = max((entry.means.get(name, math.nan) for name in _DISK_LIMIT_FIELDS),
                        key=lambda v: -1.0 if v != v else v)
            found = ("disk", value) if value == value and value >= threshold else None
        else:
            found = bottleneck({name: entry.means.get(name, math.nan) for name in fields},
                               threshold)
        if found is not None:
            groups.setdefault((entry.guest, entry.workload), []).append(
                (entry.approach, *found))
    out = []
    for (guest, workload), rows in groups.items():
        resource = rows[0][1]
        which = ", ".join(f"{approach} {value:.0%}" for approach, _, value in rows)
        out.append(f"{guest}.{workload}: the {resource} is the bottleneck ({which} busy): "
                   f"equal throughput there means the device is saturated, not that the "
                   f"approaches cost the same; compare CPU µs per request, or lower the load")
    return out


def comparison_warnings(comparison: Any, scenario: Any, *, replications: int,
                        base: Any = None, approaches: Sequence[str] | None = ()) -> list[str]:
    """Every warning for a finished comparison, in a stable order (without the prefix)."""
    return (ignored_settings(scenario, base, approaches)
            + thin_rows(comparison, scenario, replications)
            + device_bound_rows(comparison))
