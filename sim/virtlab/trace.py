"""Tracing: the event-by-event story of requests, for students to read.

Components call ``tracer.emit(...)`` only after checking ``tracer.enabled``, so a run with the
default :class:`NullTracer` pays one attribute test per potential event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["TraceRecord", "Tracer", "NullTracer", "ListTracer"]


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One traced event: when, where (dotted scope), what, for which request, and details."""

    t_us: float
    scope: str
    kind: str
    request_id: int
    detail: str

    def format(self) -> str:
        """One line for a terminal."""
        req = f"#{self.request_id}" if self.request_id >= 0 else "-"
        return f"{self.t_us:12.3f} µs  {req:>6}  {self.scope:<24} {self.kind:<14} {self.detail}"


class Tracer(Protocol):
    """Receives trace events."""

    enabled: bool

    def emit(self, t_us: float, scope: str, kind: str, request_id: int, detail: str) -> None:
        """Record one event."""


class NullTracer:
    """Discards everything (the default)."""

    enabled = False

    def emit(self, t_us: float, scope: str, kind: str, request_id: int, detail: str) -> None:
        """Do nothing."""


class ListTracer:
    """Keeps every event in memory, optionally only for some scopes or requests.

    Parameters
    ----------
    scopes:
        If given, keep only events whose scope starts with one of these prefixes.

    """

    enabled = True

    def __init__(self, scopes: tuple[str, ...] | None = None) -> None:
        self.records: list[TraceRecord] = []
        self._scopes = scopes

    def emit(self, t_us: float, scope: str, kind: str, request_id: int, detail: str) -> None:
        """Record one event if its scope is enabled."""
        if self._scopes is not None and not scope.startswith(self._scopes):
            return
        self.records.append(TraceRecord(t_us, scope, kind, request_id, detail))

    def for_request(self, request_id: int) -> list[TraceRecord]:
        """Events of one request, in time order (stable for equal times)."""
        rows = [r for r in self.records if r.request_id == request_id]
        return sorted(rows, key=lambda r: r.t_us)
