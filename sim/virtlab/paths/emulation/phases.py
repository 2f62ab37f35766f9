"""Where did the latency go: splitting each request's response time into phases.

Every microsecond between a request's arrival and its completion lands in exactly one of
:data:`virtlab.records.PHASES`, so the phases of a request sum to its latency. The split is
kept with a *mark*: the moment up to which the request's time has been accounted.

* :func:`enter` is called when the request enters the I/O path: the time since the mark was
  spent outside it (the peer, the wire towards the host, the application's own work).
* :func:`charge` is called right after work done *for this request and on its critical path*
  (its own CPU steps, the interrupt it waited for, the wire it crossed): the work's parts go to
  their phases and whatever else passed since the mark is ``queueing`` (waiting for a vCPU, a
  core, a command slot, or behind other requests).
* When the request completes, the time since the last mark is ``outside`` (see
  :meth:`virtlab.records.Request.freeze`).

Work that is not on the request's critical path (a transmit-completion interrupt handled while
the data is already on the wire) is charged to its CPU time but never to its phases, so the
remainder can never be negative.
"""

from __future__ import annotations

from collections.abc import Iterable

from virtlab.records import PHASES, Request

__all__ = ["GUEST", "EXITS", "DEVICE_MODEL", "COPIES", "HOST_KERNEL", "DEVICE", "INTERRUPT",
           "QUEUEING", "OUTSIDE", "Part", "enter", "charge"]

# By name, not position: PHASES may gain a phase (virt_compute) without moving these.
(GUEST, EXITS, DEVICE_MODEL, COPIES, HOST_KERNEL, DEVICE, INTERRUPT, QUEUEING,
 OUTSIDE) = (PHASES.index(p) for p in ("guest", "exits", "device_model", "copies", "host_kernel",
                                       "device", "interrupt", "queueing", "outside"))

#: One piece of critical-path work: (phase index, duration in µs).
Part = tuple[int, float]


def enter(req: Request, now_us: float) -> None:
    """The request enters the I/O path at ``now_us``: the time since the mark was outside."""
    phases = req.phase_us
    if phases is None:
        phases = req.phase_us = [0.0] * len(PHASES)
    phases[OUTSIDE] += now_us - req.phase_mark_us
    req.phase_mark_us = now_us


def charge(req: Request, parts: Iterable[Part], now_us: float) -> None:
    """Account the time up to ``now_us``: ``parts`` to their phases, the rest to queueing.

    ``parts`` must be work for ``req`` that happened after its mark, one piece after another,
    ending at ``now_us``; the remainder is then the time the request waited.
    """
    phases = req.phase_us
    if phases is None:  # the request did not enter through an accounting path
        return
    known = 0.0
    for index, duration_us in parts:
        phases[index] += duration_us
        known += duration_us
    phases[QUEUEING] += now_us - req.phase_mark_us - known
    req.phase_mark_us = now_us
