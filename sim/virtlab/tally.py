"""Streaming observation of completed requests: bounded memory, whatever the run length.

A :class:`Tally` belongs to one workload of one guest. The workload hands it every request as
the request completes (:meth:`Tally.add`); the request object is then free to go. What the tally
keeps:

* over the **measurement window** ``[warmup_us, duration_us]`` (a request counts when it
  *completes* inside it): the count, bytes, the sum of every per-request counter and CPU
  category, the exit reasons and latency phases, and each latency as one 8-byte float in a
  compact ``array('d')`` -- percentiles are then exact (the same interpolation as
  ``numpy.percentile``) and memory stays at 8 bytes per measured request, 80 MB for ten million;
* over the **whole run**, for the sample-path checks that need no per-request rows: the number
  of completions, the sum of their sojourn times (Little's identity
  ``∫ N(t) dt = Σ (min(d, T) − a)``), and the smallest ``start − arrival`` and
  ``done − start`` seen (causality: both are ``>= 0`` when every request is causal).

Invariants: ``window_requests <= completed``; ``len(latencies_us) == window_requests``; all
sums are over the same requests as the count they are divided by.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

from virtlab.records import PHASES, Request
from virtlab.stats import WorkloadSummary

__all__ = ["Tally"]

_NAN = float("nan")
_NPHASES = len(PHASES)


class Tally:
    """Accumulates what the summaries need as requests complete (see the module docstring)."""

    __slots__ = ("start_us", "end_us", "completed", "sojourn_us", "min_wait_us",
                 "min_service_us", "latencies_us", "bytes", "cpu_us", "exits",
                 "notifications", "interrupts", "reason_counts", "reason_us", "exits_user",
                 "phase_us", "unphased", "_late_in", "_late_out")

    def __init__(self, start_us: float, end_us: float) -> None:
        self.start_us = start_us
        self.end_us = end_us
        # Whole run.
        self.completed = 0
        self.sojourn_us = 0.0
        self.min_wait_us = math.inf
        self.min_service_us = math.inf
        # Measurement window.
        self.latencies_us = array("d")
        self.bytes = 0
        self.cpu_us = [0.0, 0.0, 0.0, 0.0]
        self.exits = 0
        self.notifications = 0
        self.interrupts = 0
        self.reason_counts = [0, 0, 0, 0]
        self.reason_us = [0.0, 0.0, 0.0, 0.0]
        self.exits_user = 0
        self.phase_us = [0.0] * _NPHASES
        self.unphased = 0  # window requests whose path does not account latency phases
        # Charges made to a request after it was observed (see RetiredRequest): for requests
        # that completed inside the window, counted; for the others, a sink.
        self._late_in = ([0.0, 0.0, 0.0, 0.0], [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0], [0, 0, 0, 0])
        self._late_out = ([0.0, 0.0, 0.0, 0.0], [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0], [0, 0, 0, 0])

    def add(self, req: Request, retire: bool = True) -> None:
        """Observe ``req``, which has completed (``req.done_us`` is set).

        With ``retire`` (while the run goes), the request is then retired: whatever is charged
        to it later reaches this tally directly. Without (at the end of a run that kept its
        requests), the request is observed with all it was ever charged.
        """
        done = req.done_us
        arrival = req.arrival_us
        self.completed += 1
        self.sojourn_us += done - arrival
        start = req.start_us
        if start == start:  # NaN: nothing ever worked on it (a zero-cost request)
            if start - arrival < self.min_wait_us:
                self.min_wait_us = start - arrival
            if done - start < self.min_service_us:
                self.min_service_us = done - start
        if done < self.start_us or done > self.end_us:
            if retire:
                req.retire(*self._late_out)
            return
        self.latencies_us.append(done - arrival)
        self.bytes += req.nbytes
        cpu = self.cpu_us
        c0, c1, c2, c3 = req.cpu_us
        cpu[0] += c0
        cpu[1] += c1
        cpu[2] += c2
        cpu[3] += c3
        self.notifications += req.notifications
        self.interrupts += req.interrupts
        exits = req.exits
        if exits:  # exit reasons and user-space exits are only ever counted with exits
            self.exits += exits
            counts = self.reason_counts
            times = self.reason_us
            rc = req.exit_counts
            rt = req.exit_reason_us
            for i in range(4):
                counts[i] += rc[i]
                times[i] += rt[i]
            self.exits_user += req.exits_user
        phases = req.phase_us
        if phases is None:
            self.unphased += 1
        else:
            sums = self.phase_us
            for i in range(_NPHASES - 1):
                sums[i] += phases[i]
            # Time after the path handed the request back (the peer, the wire) is outside.
            sums[-1] += phases[-1] + (done - req.phase_mark_us)
        if retire:
            req.retire(*self._late_in)

    @property
    def window_requests(self) -> int:
        """Requests that completed inside the measurement window."""
        return len(self.latencies_us)

    def summary(self, *, guest: str, workload: str, approach: str, kind: str,
                cores: int) -> WorkloadSummary:
        """The workload's summary over the window (same definitions as ``summarize_records``)."""
        n = len(self.latencies_us)
        span_us = self.end_us - self.start_us
        span_s = span_us / 1e6
        if n == 0:
            nan = _NAN
            return WorkloadSummary(guest, workload, approach, kind, 0, 0.0, 0.0, nan, nan, nan,
                                   nan, nan, nan, nan, nan, nan, nan, nan, nan, 0.0)
        latency = np.frombuffer(self.latencies_us, dtype=float)
        p50, p95, p99 = np.percentile(latency, [50, 95, 99])
        late_cpu, late_counts, late_times, late_ints = self._late_in
        cpu_sums = [a + b for a, b in zip(self.cpu_us, late_cpu, strict=True)]
        count_sums = [a + b for a, b in zip(self.reason_counts, late_counts, strict=True)]
        time_sums = [a + b for a, b in zip(self.reason_us, late_times, strict=True)]
        exits = self.exits + late_ints[0]
        cpu = [c / n for c in cpu_sums]
        counts = [c / n for c in count_sums]
        times = [t / n for t in time_sums]
        other = (exits - sum(count_sums)) / n
        other_us = (cpu_sums[1] - sum(time_sums)) / n
        if self.unphased:
            phases = [_NAN] * _NPHASES
        else:
            phases = [p / n for p in self.phase_us]
        exit_fields = {f"exits_{r}_per_request": v
                       for r, v in zip(("mmio", "pio", "inject", "eoi"), counts, strict=True)}
        exit_fields.update({f"exit_{r}_us": v
                            for r, v in zip(("mmio", "pio", "inject", "eoi"), times,
                                            strict=True)})
        phase_fields = {f"lat_{p}_us": v for p, v in zip(PHASES, phases, strict=True)}
        return WorkloadSummary(
            guest=guest, workload=workload, approach=approach, kind=kind, requests=n,
            throughput_per_s=n / span_s, throughput_bytes_per_s=self.bytes / span_s,
            latency_mean_us=float(latency.mean()), latency_p50_us=float(p50),
            latency_p95_us=float(p95), latency_p99_us=float(p99),
            cpu_guest_us=cpu[0], cpu_exit_us=cpu[1], cpu_backend_us=cpu[2],
            cpu_host_kernel_us=cpu[3], cpu_total_us=sum(cpu_sums) / n,
            exits_per_request=exits / n,
            notifications_per_request=(self.notifications + late_ints[1]) / n,
            interrupts_per_request=(self.interrupts + late_ints[2]) / n,
            cpu_share=sum(cpu_sums) / (cores * span_us),
            exits_other_per_request=other, exit_other_us=other_us,
            exits_user_per_request=(self.exits_user + late_ints[3]) / n,
            **exit_fields, **phase_fields)
