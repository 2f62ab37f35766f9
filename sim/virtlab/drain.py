"""A consumer that sleeps when idle and is woken by a doorbell: the shape of every notification.

Virtio kicks, virtual interrupts, Xen event channels, a NIC's interrupt and NAPI polling all
follow one pattern: a producer queues work; if the consumer is asleep, the producer *notifies*
it (and pays for that); while the consumer is awake, further work is queued silently (the
notification is suppressed) and picked up in the same drain. :class:`DrainLoop` is that pattern.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import simpy
from simpy.events import ProcessGenerator

from virtlab.trace import NullTracer, Tracer

__all__ = ["DrainLoop"]


class DrainLoop:
    """A queue drained in batches by one process that sleeps when the queue is empty.

    States of the consumer: *asleep* (notifications enabled), *notified* (doorbell rung, not yet
    running) and *running*. Invariants:

    * a push rings the doorbell iff the consumer is asleep, so a sleep period costs exactly one
      notification however many items arrive before the consumer drains them;
    * items are handled in push order, at most ``batch_limit`` per call of ``handle_batch``;
    * the consumer re-checks the queue after the last batch before it sleeps again (the
      "final check" of virtio and Xen rings), so no item is left behind.

    Parameters
    ----------
    env:
        The SimPy environment.
    scope:
        Dotted name, e.g. ``"vm0.vhost"``.
    handle_batch:
        Handles a list of items: returns what the loop delegates to with ``yield from`` (a
        generator, or an empty tuple when the batch took no simulated time).
    batch_limit:
        Maximum items per batch (e.g. the NAPI budget).
    on_wake:
        Optional, run when the consumer wakes, given the item that rang (the cost of an
        interrupt entry or a thread wake-up); returns what to delegate to, like
        ``handle_batch``.

    """

    def __init__(self, env: simpy.Environment, scope: str,
                 handle_batch: Callable[[list[Any]], Iterable[Any]], *, batch_limit: int,
                 on_wake: Callable[[Any], Iterable[Any]] | None = None,
                 tracer: Tracer | None = None) -> None:
        if batch_limit < 1:
            raise ValueError(f"{scope}: batch_limit must be >= 1, got {batch_limit}")
        self.env = env
        self.scope = scope
        self._handle_batch = handle_batch
        self._on_wake = on_wake
        self.batch_limit = batch_limit
        self._items: deque[Any] = deque()
        self._asleep = True
        self._doorbell = env.event()
        self.notifications = 0
        self.batches = 0
        self.items_handled = 0
        self.tracer: Tracer = tracer if tracer is not None else NullTracer()

    def start(self) -> None:
        """Start the consumer process (after all components are wired)."""
        self.env.process(self._drain())

    @property
    def asleep(self) -> bool:
        """True while the consumer sleeps with notifications enabled."""
        return self._asleep

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: Any) -> bool:
        """Queue ``item``; return True if this push had to notify (ring) the consumer."""
        self._items.append(item)
        if self._asleep:
            self._asleep = False
            self.notifications += 1
            self._doorbell.succeed()
            if self.tracer.enabled:
                self._trace(item, "notify", "consumer was asleep: doorbell rung")
            return True
        if self.tracer.enabled:
            self._trace(item, "suppressed", f"consumer busy, {len(self._items)} queued")
        return False

    def handle_now(self, item: Any) -> None:
        """Account ``item`` as pushed, notified and drained alone, at once, without events.

        For a consumer whose wake-up and handling cost nothing (the zero-cost reductions of the
        analytic tests and benchmarks): such a consumer would wake, take the item and sleep
        again within the same simulated instant, so the counters end as :meth:`push` and the
        drain would leave them, and the caller need not wait. Only valid while the consumer is
        asleep (it then has nothing queued).
        """
        assert self._asleep and not self._items, f"{self.scope}: handle_now while awake"
        self.notifications += 1
        self.batches += 1
        self.items_handled += 1
        if self.tracer.enabled:
            self._trace(item, "notify", "consumer was asleep: handled at once (costs nothing)")

    def _trace(self, item: Any, kind: str, detail: str) -> None:
        req = item[1] if isinstance(item, tuple) and len(item) > 1 else None
        req_id = getattr(req, "id", -1)
        self.tracer.emit(self.env.now, self.scope, kind, req_id, detail)

    def _drain(self) -> ProcessGenerator:
        items = self._items
        while True:
            yield self._doorbell
            if self._on_wake is not None:
                yield from self._on_wake(items[0])
            limit = self.batch_limit
            while items:
                if len(items) <= limit:  # the usual case: take everything queued
                    batch = list(items)
                    items.clear()
                else:
                    batch = [items.popleft() for _ in range(limit)]
                count = len(batch)
                self.batches += 1
                self.items_handled += count
                yield from self._handle_batch(batch)
            self._asleep = True
            self._doorbell = self.env.event()
