"""Per-request state while in flight, and the flat record kept when it completes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATEGORIES", "GUEST", "EXIT", "BACKEND", "HOST", "Request", "RequestRecord"]

#: Where host CPU time is spent, in the order of :attr:`Request.cpu_us`.
CATEGORIES = ("guest", "exit", "backend", "host_kernel")
GUEST, EXIT, BACKEND, HOST = range(4)


class Request:
    """One I/O request (a transaction, a stream segment, a block I/O) while it is in flight.

    Invariant: ``arrival_us <= start_us <= done_us`` once each is set; ``start_us`` is the first
    moment any resource worked on the request (NaN until then).
    """

    __slots__ = ("id", "guest", "workload", "path", "kind", "nbytes", "arrival_us", "start_us",
                 "done_us", "exits", "notifications", "interrupts", "cpu_us")

    def __init__(self, req_id: int, guest: str, workload: str, path: str, kind: str,
                 nbytes: int, arrival_us: float) -> None:
        self.id = req_id
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

    def mark_started(self, now_us: float) -> None:
        """Set the start time if it is not set yet."""
        if self.start_us != self.start_us:  # NaN: not started
            self.start_us = now_us

    def freeze(self) -> RequestRecord:
        """Return the immutable record of this (completed) request."""
        return RequestRecord(
            id=self.id, guest=self.guest, workload=self.workload, path=self.path,
            kind=self.kind, nbytes=self.nbytes, arrival_us=self.arrival_us,
            start_us=self.start_us, done_us=self.done_us, exits=self.exits,
            notifications=self.notifications, interrupts=self.interrupts,
            cpu_guest_us=self.cpu_us[GUEST], cpu_exit_us=self.cpu_us[EXIT],
            cpu_backend_us=self.cpu_us[BACKEND], cpu_host_kernel_us=self.cpu_us[HOST],
        )


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

    @property
    def latency_us(self) -> float:
        """Response time: completion minus arrival."""
        return self.done_us - self.arrival_us
