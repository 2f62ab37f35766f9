"""What the virtio and Xen split drivers share: doorbells, ring monitors and phase accounting.

* :class:`Doorbell`: an eventfd, an event channel or an interrupt line with one sleeping
  consumer. Whether to ring it is decided by the ring's suppression rules (event index,
  ``req_event``), not here; the doorbell only remembers a ring that found nobody asleep.
* :class:`WaitList`: producers blocked until a ring has room again (a stopped transmit queue,
  a full block ring), all woken by the completion that makes room.
* :class:`RingMonitor`: a ring's occupancy over time (time-weighted mean, maximum and a sampled
  series) and the sizes of the batches taken from it.
* :func:`run_phased`: run CPU steps with :meth:`virtlab.cpu.Cpu.run` and split the request's
  elapsed time into latency phases (:data:`virtlab.records.PHASES`): waiting for a CPU is
  *queueing*, each step's duration goes to the step's own phase.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import simpy
from simpy.events import Event, ProcessGenerator

from virtlab.cpu import Cpu, ExecContext
from virtlab.paths.vm import PH_VCPU_WAKEUP, PhasedStep
from virtlab.records import EXIT_REASONS, PHASES, Request

__all__ = ["count_exits", "EXIT_MMIO", "EXIT_INJECT", "EXIT_EOI", "Doorbell", "WaitList",
           "RingMonitor", "PhasedStep", "run_phased", "mark", "phase_index", "PH_GUEST",
           "PH_EXITS", "PH_BACKEND", "PH_COPIES", "PH_HOST", "PH_DEVICE", "PH_INTERRUPT",
           "PH_WAKEUP", "PH_VCPU_WAKEUP", "PH_QUEUEING", "PH_OUTSIDE", "VNET_HDR_BYTES",
           "PAGE_BYTES"]

#: virtio-net header in front of every packet (``struct virtio_net_hdr_mrg_rxbuf``, 12 bytes).
VNET_HDR_BYTES = 12
#: Guest page size: the unit of buffers, grants and block segments.
PAGE_BYTES = 4096


def phase_index(name: str, fallback: str = "queueing") -> int:
    """Index of a phase in :data:`PHASES` (``fallback`` if this build lacks it)."""
    return PHASES.index(name) if name in PHASES else PHASES.index(fallback)


PH_GUEST = phase_index("guest")
PH_EXITS = phase_index("exits")
PH_BACKEND = phase_index("device_model")   # the backend is the paravirtual device model
PH_COPIES = phase_index("copies")          # copies and grant operations
PH_HOST = phase_index("host_kernel")
PH_DEVICE = phase_index("device")
PH_INTERRUPT = phase_index("interrupt")    # interrupt or upcall delivery and completion work
# Waking a sleeping backend thread (or scheduling the driver domain) belongs to the backend;
# waking a halted vCPU (or scheduling a blocked guest) to the interrupt's delivery
# (PH_VCPU_WAKEUP, shared with the emulated path in virtlab.paths.vm). A build whose PHASES has
# a "wakeup" phase gets both there.
PH_WAKEUP = phase_index("wakeup", "device_model")
PH_QUEUEING = phase_index("queueing")
PH_OUTSIDE = phase_index("outside")


#: Exit reasons (:data:`virtlab.records.EXIT_REASONS`) of the paravirtual path's exits: the
#: virtio-pci notify write (MMIO, handled in KVM through ioeventfd), the exit that forces an
#: interrupt's injection (without posted interrupts), and the guest's EOI.
EXIT_MMIO = EXIT_REASONS.index("mmio")
EXIT_INJECT = EXIT_REASONS.index("inject")
EXIT_EOI = EXIT_REASONS.index("eoi")


def count_exits(req: Request, reason: int | None, count: int, cpu_us: float) -> None:
    """Add ``count`` VM exits costing ``cpu_us`` to ``req`` (``reason`` None: "other")."""
    req.exits += count
    if reason is not None:
        req.exit_counts[reason] += count
        req.exit_reason_us[reason] += cpu_us


def mark(req: Request, phase: int, now_us: float) -> None:
    """Attribute the time since the request's last mark to ``phase`` and move the mark."""
    phases = req.phase_us
    if phases is None:
        phases = req.phase_us = [0.0] * len(PHASES)
    phases[phase] += now_us - req.phase_mark_us
    req.phase_mark_us = now_us


def run_phased(cpu: Cpu, ctx: ExecContext | None, req: Request, steps: Sequence[PhasedStep],
               gap_phase: int, *, account: bool = True) -> ProcessGenerator:
    """Run ``steps`` in ``ctx`` for ``req`` and split the elapsed time into phases.

    The time since the request's last mark goes to ``gap_phase`` (what the request was waiting
    for), waiting for the context or a core to *queueing*, and each step to its own phase.
    With ``account=False`` (work for a request that already completed, such as reaping its
    transmit buffer later) only the CPU time is charged.
    """
    env = cpu.env
    if account:
        mark(req, gap_phase, env.now)
    start = env.now
    yield from cpu.run(ctx, req, steps)  # it reads the first three fields of each step
    if not account:
        return
    phases = req.phase_us
    assert phases is not None
    end = env.now
    if req.phase_mark_us > start:
        # Another activity of the same request (the backend already working on a chain whose
        # kick is still being paid for) accounted part of this span: attribute only the rest,
        # to the last steps, so that the phases stay a partition of the latency.
        left = end - req.phase_mark_us
        for _c, duration, _label, phase in reversed(steps):
            take = duration if duration < left else left
            if take <= 0.0:
                break
            phases[phase] += take
            left -= take
        if left > 1e-9:
            phases[PH_QUEUEING] += left
        req.phase_mark_us = end
        return
    service = 0.0
    for _c, duration, _label, phase in steps:
        phases[phase] += duration
        service += duration
    waited = (end - start) - service
    if waited > 1e-9:   # float noise would show as "-0.000"
        phases[PH_QUEUEING] += waited
    req.phase_mark_us = end


class Doorbell:
    """An eventfd, event channel or interrupt line, and the one consumer that sleeps on it.

    States: *idle* (the consumer runs, nothing pending), *armed* (the consumer sleeps in
    :meth:`wait`) and *pending* (rung while the consumer ran: its next :meth:`wait` returns
    at once, as an eventfd with a count or a pending event-channel bit would). Invariant: a
    ring is never lost; it either wakes the sleeper or leaves the bell pending.
    """

    __slots__ = ("env", "name", "_event", "pending", "rings", "wakeups")

    def __init__(self, env: simpy.Environment, name: str) -> None:
        self.env = env
        self.name = name
        self._event: Event | None = None
        self.pending = False
        self.rings = 0
        self.wakeups = 0

    @property
    def sleeping(self) -> bool:
        """True while the consumer sleeps on the bell."""
        return self._event is not None

    def wait(self) -> Event | None:
        """Sleep: an event to yield, or ``None`` if the bell was pending (go on at once)."""
        if self.pending:
            self.pending = False
            return None
        self._event = self.env.event()
        return self._event

    def sleep(self) -> ProcessGenerator:
        """:meth:`wait` as a process step; returns True if the consumer really slept."""
        wait = self.wait()
        if wait is not None:
            yield wait
        return wait is not None

    def ring(self) -> bool:
        """Ring; return True if this woke the sleeping consumer."""
        self.rings += 1
        event = self._event
        if event is not None:
            self._event = None
            self.wakeups += 1
            event.succeed()
            return True
        self.pending = True
        return False


class WaitList:
    """Producers blocked until a ring has room again.

    States: *empty* or *holding* one event per blocked producer. Invariant: :meth:`wake_all`
    leaves it empty, so a producer that still finds no room waits again with a new event.
    """

    __slots__ = ("env", "_events")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._events: list[Event] = []

    def wait(self) -> Event:
        """Block: an event that fires at the next :meth:`wake_all`."""
        event = self.env.event()
        self._events.append(event)
        return event

    def wake_all(self) -> None:
        """Room was made: wake every blocked producer."""
        events, self._events = self._events, []
        for event in events:
            event.succeed()


class RingMonitor:
    """Occupancy of one ring over time and the batch sizes taken from it.

    ``update(n)`` is called whenever the occupancy changes; the time-weighted mean integrates it
    exactly. The series keeps one ``(t_us, occupancy)`` sample per ``sample_every_us`` (the
    first change after each sampling instant), enough to plot without storing every change.
    """

    __slots__ = ("env", "name", "size", "sample_every_us", "_area", "_last_us", "_value",
                 "max_occupancy", "series", "_next_sample_us", "batches")

    def __init__(self, env: simpy.Environment, name: str, size: int,
                 sample_every_us: float) -> None:
        self.env = env
        self.name = name
        self.size = size
        self.sample_every_us = sample_every_us
        self._area = 0.0
        self._last_us = 0.0
        self._value = 0
        self.max_occupancy = 0
        self.series: list[tuple[float, int]] = [(0.0, 0)]
        self._next_sample_us = sample_every_us
        self.batches: Counter[int] = Counter()

    def update(self, occupancy: int) -> None:
        """Record the occupancy from now on."""
        now = self.env.now
        self._area += self._value * (now - self._last_us)
        self._last_us = now
        self._value = occupancy
        if occupancy > self.max_occupancy:
            self.max_occupancy = occupancy
        if now >= self._next_sample_us:
            self.series.append((now, occupancy))
            self._next_sample_us = now + self.sample_every_us

    def batch(self, size: int) -> None:
        """Record one batch of ``size`` entries taken from the ring at once."""
        self.batches[size] += 1

    def mean_occupancy(self, until_us: float) -> float:
        """Time-weighted mean occupancy over ``[0, until_us]``."""
        area = self._area + self._value * (until_us - self._last_us)
        return area / until_us if until_us > 0 else 0.0

    def mean_batch(self) -> float:
        """Mean batch size (NaN if no batch was taken)."""
        count = sum(self.batches.values())
        total = sum(size * n for size, n in self.batches.items())
        return total / count if count else float("nan")

    def summary(self, until_us: float) -> dict[str, object]:
        """Everything observed, as plain data for results."""
        return {"size": self.size, "max_occupancy": self.max_occupancy,
                "mean_occupancy": self.mean_occupancy(until_us),
                "batches": sum(self.batches.values()), "mean_batch": self.mean_batch(),
                "batch_sizes": dict(sorted(self.batches.items())),
                "occupancy_series": list(self.series)}
