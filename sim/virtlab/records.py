"""Per-request state while in flight, and the flat record kept when it completes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATEGORIES", "GUEST", "EXIT", "BACKEND", "HOST", "Request", "RetiredRequest",
           "RequestRecord", "EXIT_REASONS", "PHASES"]

#: Where host CPU time is spent, in the order of :attr:`Request.cpu_us`.
CATEGORIES = ("guest", "exit", "backend", "host_kernel")
GUEST, EXIT, BACKEND, HOST = range(4)

# One shared NaN for "not accounted", so that equal runs give equal records (NaN != NaN, but
# tuple comparison treats the same object as equal).
_NAN = float("nan")

#: Why a VM exit happened, in the order of :attr:`Request.exit_counts`. Exits a path counts only
#: in ``exits`` (without a reason) are reported as ``other``.
EXIT_REASONS = ("mmio", "pio", "inject", "eoi")

#: Phases of a request's latency ("where did the time go"), in the order of
#: :attr:`Request.phase_us`. Paths that account them (the emulated path) split every microsecond
#: between arrival and completion into exactly one phase; see ``virtlab.paths.emulation.phases``.
#: ``virt_compute`` is what virtualization adds to the application's own CPU work and system
#: calls (:mod:`virtlab.compute`: binary-translated syscalls, shadow-paging faults and CR3
#: loads, two-dimensional page walks, virtual timers and IPIs); ``exits`` are the I/O path's.
#: ``outside`` stays last (records and tallies add the time after the path to it).
PHASES = ("guest", "exits", "virt_compute", "device_model", "copies", "host_kernel", "device",
          "interrupt", "queueing", "outside")


class Request:
    """One I/O request (a transaction, a stream segment, a block I/O) while it is in flight.

    Invariant: ``arrival_us <= start_us <= done_us`` once each is set; ``start_us`` is the first
    moment any resource worked on the request (NaN until then).
    """

    __slots__ = ("id", "guest", "workload", "path", "kind", "nbytes", "arrival_us", "start_us",
                 "done_us", "exits", "notifications", "interrupts", "cpu_us", "exit_counts",
                 "exit_reason_us", "exits_user", "phase_us", "phase_mark_us", "late",
                 "flow_hash")

    def __init__(self, req_id: int, guest: str, workload: str, path: str, kind: str,
                 nbytes: int, arrival_us: float) -> None:
        self.id = req_id
        # The RSS hash of the connection the request travels on (Linux's skb->hash): a NIC
        # with several receive queues steers the request's packets to queue
        # indirection[flow_hash % 128] (virtlab.paths.kernelstack). 0 until a runner sets it.
        self.flow_hash = 0
        self.guest = guest
        self.workload = workload
        self.path = path
        self.kind = kind
        self.nbytes = nbytes
        self.arrival_us = arrival_us
        self.start_us = float("nan")
        self.done_us = float("nan")
        self.exits = 0
        self.notifications = 0
        self.interrupts = 0
        self.cpu_us = [0.0, 0.0, 0.0, 0.0]
        # Exits by reason (EXIT_REASONS) with their CPU time, and how many of them reached a
        # user-space device model; kept by paths that know why they exit.
        self.exit_counts = [0, 0, 0, 0]
        self.exit_reason_us = [0.0, 0.0, 0.0, 0.0]
        self.exits_user = 0
        # Latency phases (PHASES), None unless the path accounts them; phase_mark_us is the
        # moment up to which the latency has been split (see paths.emulation.phases).
        self.phase_us: list[float] | None = None
        self.phase_mark_us = arrival_us
        # Where counts charged after retirement go (see RetiredRequest); unused until then.
        self.late: list[int] | None = None

    def retire(self, cpu_us: list[float], exit_counts: list[int], exit_reason_us: list[float],
               late: list[int]) -> None:
        """Send every later charge to the given accumulators (see :class:`RetiredRequest`).

        The request has completed and been observed; work the model still does for it (reaping
        its transmit buffer, the interrupt that reports that) is then added straight to these
        lists, which its tally owns, instead of to the request.
        """
        self.cpu_us = cpu_us
        self.exit_counts = exit_counts
        self.exit_reason_us = exit_reason_us
        self.late = late
        self.__class__ = RetiredRequest

    def mark_started(self, now_us: float) -> None:
        """Set the start time if it is not set yet."""
        if self.start_us != self.start_us:  # NaN: not started
            self.start_us = now_us

    def freeze(self) -> RequestRecord:
        """Return the immutable record of this (completed) request."""
        cpu = self.cpu_us
        counts = self.exit_counts
        times = self.exit_reason_us
        phases = self.phase_us
        if phases is None:
            lat: tuple[float, ...] | list[float] = _NO_PHASES
        else:
            # Time after the path handed the request back (the peer, the wire) is outside.
            lat = phases[:-1]
            lat.append(phases[-1] + (self.done_us - self.phase_mark_us))
        # Positional, in field order: a record is built for every request, so this is hot.
        return RequestRecord(
            self.id, self.guest, self.workload, self.path, self.kind, self.nbytes,
            self.arrival_us, self.start_us, self.done_us, self.exits, self.notifications,
            self.interrupts, cpu[GUEST], cpu[EXIT], cpu[BACKEND], cpu[HOST],
            counts[0], counts[1], counts[2], counts[3], self.exits - sum(counts),
            self.exits_user, times[0], times[1], times[2], times[3], cpu[EXIT] - sum(times),
            *lat)


_NO_PHASES = (_NAN,) * len(PHASES)


def _forwarded(name: str, index: int) -> property:
    slot = Request.__dict__[name]  # the slot's member descriptor

    def get(self: Request) -> int:
        return slot.__get__(self)

    def add_delta(self: Request, value: int) -> None:
        late = self.late
        assert late is not None
        late[index] += value - slot.__get__(self)
        slot.__set__(self, value)

    return property(get, add_delta, doc=f"``{name}``; later increments go to the tally.")


class RetiredRequest(Request):
    """A completed request whose tally has already observed it.

    Work the model still does for it after completion is real CPU time, exits and interrupts
    caused by that request, so it must still be charged. A retired request's ``cpu_us``,
    ``exit_counts`` and ``exit_reason_us`` are its tally's lists of late charges (shared by the
    retired requests of the same tally), and increments of ``exits``, ``notifications``,
    ``interrupts`` and ``exits_user`` are forwarded there too. The code that charges a request
    is unchanged: it cannot tell the difference. Its summary fields are then exact, while the
    request object itself can be freed as soon as the model drops it.
    """

    __slots__ = ()

    exits = _forwarded("exits", 0)
    notifications = _forwarded("notifications", 1)
    interrupts = _forwarded("interrupts", 2)
    exits_user = _forwarded("exits_user", 3)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One completed request, as a flat row (goes straight into a DataFrame)."""

    id: int
    guest: str
    workload: str
    path: str
    kind: str
    nbytes: int
    arrival_us: float
    start_us: float
    done_us: float
    exits: int
    notifications: int
    interrupts: int
    cpu_guest_us: float
    cpu_exit_us: float
    cpu_backend_us: float
    cpu_host_kernel_us: float
    # Exits by reason and their CPU time (EXIT_REASONS + "other"), exits to user space.
    exits_mmio: int = 0
    exits_pio: int = 0
    exits_inject: int = 0
    exits_eoi: int = 0
    exits_other: int = 0
    exits_user: int = 0
    exit_mmio_us: float = 0.0
    exit_pio_us: float = 0.0
    exit_inject_us: float = 0.0
    exit_eoi_us: float = 0.0
    exit_other_us: float = 0.0
    # Latency split into PHASES (NaN for paths that do not account phases); they sum to
    # latency_us.
    lat_guest_us: float = _NAN
    lat_exits_us: float = _NAN
    lat_virt_compute_us: float = _NAN
    lat_device_model_us: float = _NAN
    lat_copies_us: float = _NAN
    lat_host_kernel_us: float = _NAN
    lat_device_us: float = _NAN
    lat_interrupt_us: float = _NAN
    lat_queueing_us: float = _NAN
    lat_outside_us: float = _NAN

    @property
    def latency_us(self) -> float:
        """Response time: completion minus arrival."""
        return self.done_us - self.arrival_us
