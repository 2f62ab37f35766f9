"""How big a run is before it starts: an upper estimate of simulated events and memory.

The command line refuses a run whose estimate exceeds :data:`EVENT_BUDGET` events or
:data:`MEMORY_BUDGET_BYTES` of memory unless ``--force`` is given, so that an in-range but
enormous value (a rate of 10^9 per second, a 16 GiB window, a week of simulated time) does not
silently take minutes and gigabytes. The estimate is deliberately an *upper* one: each workload
completes at most as many requests as its own bounds allow (open loop: its rate; closed loop:
its requests in flight over the least possible latency, the link's line rate, the disk's
channels and interface), all of them together at most what the host's cores can serve at
:data:`MIN_CPU_US_PER_REQUEST` each, and each request costs :data:`EVENTS_PER_REQUEST` events,
weighted up when many requests wait at once (:data:`WAITING_PER_EXTRA_EVENT`), since long
queues make each event dearer.
On the default scenario the estimate (570,000 events per run) is about 7 times the measured
count (58,000 to 82,000 scheduled events per 20 ms run, 8 to 15 per request, counted on
``simpy.Environment.schedule``); a refusal therefore means "probably far too big", never
"certainly".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Estimate", "estimate_run", "estimate_total", "EVENT_BUDGET", "MEMORY_BUDGET_BYTES",
           "EVENTS_PER_REQUEST"]

#: Largest estimated number of simulated events (all runs of a command together) run without
#: ``--force``. At the measured 200,000-270,000 events per second of one core this is at most
#: about 8 minutes of one core (the estimate is an upper bound, so usually much less).
EVENT_BUDGET = 100_000_000
#: Largest estimated peak memory (all parallel processes together) run without ``--force``.
MEMORY_BUDGET_BYTES = 2 << 30

#: Events per completed request, an upper value (measured 8 to 15 on the four approaches).
EVENTS_PER_REQUEST = 20
#: Requests waiting at once that make one event cost as much as a second one (measured: about
#: 13x per event with 4,000 in flight, 20x with 16,000; ``native``, 1 ms, this machine).
WAITING_PER_EXTRA_EVENT = 1000
#: Least host CPU time one request can cost (µs); bounds the host's total request rate.
MIN_CPU_US_PER_REQUEST = 0.5
#: Memory of an idle interpreter with the model loaded (bytes; measured ~70 MB peak RSS).
_BASE_BYTES = 100 << 20
#: Memory per request in flight (its process, events and request object; assumption).
_IN_FLIGHT_BYTES = 4 << 10
#: Memory per completed request kept for the statistics (its record; assumption).
_RECORD_BYTES = 512
#: Memory per ring slot (list entry and descriptor state; assumption).
_SLOT_BYTES = 256


@dataclass(frozen=True)
class Estimate:
    """Upper estimates for one run: requests, events and peak memory, and the main workload."""

    requests: float
    events: float
    memory_bytes: float
    heaviest: str


def _workload_rate_per_us(scenario: Any, workload: Any) -> float:
    """Upper bound of the workload's completions per µs."""
    from virtlab.workload import BlockIO, BulkStream, CpuHog, RequestResponse

    nic, disk, host = scenario.nic, scenario.disk, scenario.host
    line_bytes_per_us = nic.line_rate_gbps * 1e9 / 8 / 1e6
    if isinstance(workload, CpuHog):
        return min(workload.threads, host.cores) / max(workload.chunk_us, 1.0)
    if workload.loop == "open":
        return workload.rate_per_s / 1e6
    if isinstance(workload, RequestResponse):
        least_latency_us = (2 * nic.wire_latency_us + workload.server_work_us
                            + (workload.request_bytes + workload.response_bytes)
                            / line_bytes_per_us)
        return workload.in_flight / max(least_latency_us, 1.0)
    if isinstance(workload, BulkStream):
        unit = min(max(workload.message_bytes, nic.tso_bytes), workload.window_bytes)
        outstanding = max(1, workload.window_bytes // unit)
        return min(outstanding / max(2 * nic.wire_latency_us, 1.0), line_bytes_per_us / unit)
    if not isinstance(workload, BlockIO):  # an application server (virtlab.servers)
        return workload.connections / max(2 * nic.wire_latency_us, 1.0)
    outstanding = workload.iodepth * workload.jobs
    if disk.kind == "flash":
        access_us = min(disk.read_access_us, disk.write_access_us)
    elif workload.pattern == "random":
        access_us = disk.seek_us + 30e6 / disk.rpm  # a seek and half a turn on average
    else:
        access_us = 0.0  # sequential: the interface bounds it
    device = min(outstanding, disk.channels) / max(access_us, 1.0)
    interface = disk.interface_mbytes_per_s / workload.block_bytes  # MB/s = bytes per µs
    return min(device, interface)


def _outstanding(scenario: Any, workload: Any) -> int:
    from virtlab.workload import BlockIO, BulkStream, CpuHog, RequestResponse

    if isinstance(workload, RequestResponse):
        return workload.in_flight
    if isinstance(workload, BulkStream):
        unit = min(max(workload.message_bytes, scenario.nic.tso_bytes), workload.window_bytes)
        return max(1, workload.window_bytes // unit)
    if isinstance(workload, BlockIO):
        return workload.iodepth * workload.jobs
    if isinstance(workload, CpuHog):
        return workload.threads
    return workload.connections  # an application server: one request per connection


def estimate_run(scenario: Any) -> Estimate:
    """Upper estimates for one run of ``scenario`` (one replication, its own approaches).

    Open-loop arrivals happen whether or not the host keeps up, so they count in full (and the
    ones beyond what the cores can serve wait in memory); closed-loop completions are bounded
    by the workloads' own limits and by the cores together.
    """
    sim_us = scenario.duration_us + scenario.cooldown_us
    rates: list[tuple[float, str]] = []
    open_rate = closed_rate = 0.0
    outstanding = 0
    slots = 0
    pv = scenario.paravirtual
    for g, guest in enumerate(scenario.guests):
        for w, workload in enumerate(guest.workloads):
            rate = _workload_rate_per_us(scenario, workload)
            rates.append((rate, f"guests[{g}].workloads[{w}] ({workload.kind})"))
            if workload.loop == "open" and workload.kind != "cpu":
                open_rate += rate
            else:
                closed_rate += rate
                outstanding += _outstanding(scenario, workload)
        if guest.approach == "paravirtual":
            slots += 4 * pv.ring_size + 2 * pv.xen_net_ring_slots
    cpu_bound = scenario.host.cores / MIN_CPU_US_PER_REQUEST
    arrivals = open_rate * sim_us
    backlog = max(0.0, arrivals - cpu_bound * sim_us)
    requests = arrivals + min(closed_rate, cpu_bound) * sim_us + outstanding
    heaviest = max(rates)[1] if rates else "guests"
    memory = (_BASE_BYTES + (outstanding + backlog) * _IN_FLIGHT_BYTES
              + requests * _RECORD_BYTES + slots * _SLOT_BYTES)
    # Long queues make each event dearer (measured: with 16,000 requests in flight an event
    # costs about 20 times as much as on the default scenario), so events are weighted.
    weight = 1.0 + (outstanding + backlog) / WAITING_PER_EXTRA_EVENT
    return Estimate(requests, requests * EVENTS_PER_REQUEST * weight, memory, heaviest)


def estimate_total(scenarios: Sequence[Any], replications: int, jobs: int
                   ) -> tuple[float, float, Estimate]:
    """Events of all runs together, peak memory with ``jobs`` processes, and the largest run."""
    estimates = [estimate_run(s) for s in scenarios]
    largest = max(estimates, key=lambda e: e.events)
    events = sum(e.events for e in estimates) * replications
    parallel = max(1, min(jobs, len(scenarios) * replications))
    memory = max(e.memory_bytes for e in estimates) * parallel
    return events, memory, largest
