"""An emulated device's interrupt line into the guest, and the driver's interrupt handling.

The device model *raises* a cause (a packet received, a transmit done, a command completed).
If the line is idle, a virtual interrupt is delivered: the guest's handler runs (its register
accesses trap), masks the device and polls it (NAPI, or the loop of a 2.4-era handler), and
when nothing is left it unmasks the device (more trapping accesses). Causes raised while the
handler runs are picked up by the same poll; a cause raised after the last look is found by
the unmask, which raises the line again at once (QEMU's ``set_ims`` re-evaluates ICR, S18).

With ``latch_causes`` (e1000: a read-to-clear cause register, S100) the handler reads the causes
once, at entry (``e1000_intr``: ``er32(ICR)``); every cause raised after that read stays latched
in ICR while the device is masked, even when the poll has already handled its packet, and the
unmask (``e1000_irq_enable``: the IMS write) finds it and raises the line again. A device whose
handler loops on its status register until no cause is left (pcnet32) acknowledges them in the
loop and does not latch.

With interrupt mitigation (``min_interval_us > 0``; QEMU's e1000 ``mitigation`` property, S100)
the line follows QEMU's ``set_interrupt_cause`` and ``e1000_mit_timer``: a rising edge with no
mitigation timer running raises the interrupt at once and arms the timer for
``min_interval_us``; a rising edge while the timer runs is deferred to its expiry, everything
raised meanwhile shares that one interrupt, and the expiry raises it and re-arms the timer. The
timer is armed only by a rising edge, so an interrupt that finds the timer expired is raised at
once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import simpy
from simpy.events import ProcessGenerator

from virtlab.trace import NullTracer, Tracer

__all__ = ["DeviceInterrupt"]

IDLE, PENDING, RUNNING = "idle", "pending", "running"


class DeviceInterrupt:
    """One device's interrupt line and the guest handler that drains it.

    States: *idle* (unmasked, nothing raised) -> *pending* (raised, delivery waits for the
    mitigation timer) -> *running* (delivered; the handler polls with the device masked) ->
    *idle*. Invariants:

    * a delivery happens only from *idle* or *pending*, so causes raised while *pending* or
      *running* never cost a second interrupt;
    * two deliveries are at least ``min_interval_us`` apart;
    * items are handled in the order they were raised, at most ``batch_limit`` per batch
      (and, without ``poll_until_empty``, one batch per interrupt); with ``weight``, a batch
      takes items until their weight reaches ``batch_limit``, and the poll goes on only
      while a batch reached it (NAPI: ``e1000_clean`` completes when ``work_done < budget``);
    * no item is left behind: the unmask re-raises the line if anything is queued (or, with
      ``latch_causes``, if a cause was raised after the handler's read).

    Parameters
    ----------
    env:
        The SimPy environment.
    scope:
        Dotted name, e.g. ``"vm0.e1000.irq"``.
    deliver:
        Generator function run when the interrupt is delivered, given the items raised so far
        and the moment mitigation started holding the interrupt back (None if it did not):
        injection, the handler's entry accesses, the EOI.
    handle_batch:
        Generator function handling a list of items (the poll).
    finish:
        Generator function run when the poll found nothing more, given every item handled
        since the delivery (receive refill, the unmask accesses).
    batch_limit:
        Items per batch (the NAPI budget).
    min_interval_us:
        Minimum time between two deliveries (0: no mitigation).
    poll_until_empty:
        True for a NAPI-style driver that polls until nothing is left (e1000); False for a
        handler that completes what its status read found, at most ``batch_limit`` items
        (AHCI, IDE): later causes raise the next interrupt.
    weight:
        Work per item counted against ``batch_limit`` (e1000: received frames, the
        descriptors ``e1000_clean_rx_irq`` counts in ``work_done``; a transmit completion
        counts nothing). None: every item counts one and the poll runs until nothing is left.
    latch_causes:
        True for a device whose handler reads a read-to-clear cause register once at entry
        (e1000's ICR): a cause raised after :meth:`read_causes` and before the unmask raises
        the line again at the unmask even if its item was handled by the poll. The
        interrupt it raises may find nothing to poll; ``last_cause`` then names the item whose
        cause raised it (for accounting).

    """

    def __init__(self, env: simpy.Environment, scope: str, *,
                 deliver: Callable[[list[Any], float | None], ProcessGenerator],
                 handle_batch: Callable[[list[Any]], ProcessGenerator],
                 finish: Callable[[list[Any]], ProcessGenerator], batch_limit: int,
                 min_interval_us: float = 0.0, poll_until_empty: bool = True,
                 latch_causes: bool = False, weight: Callable[[Any], int] | None = None,
                 tracer: Tracer | None = None) -> None:
        if batch_limit < 1:
            raise ValueError(f"{scope}: batch_limit must be >= 1, got {batch_limit}")
        self.env = env
        self.scope = scope
        self._deliver = deliver
        self._handle_batch = handle_batch
        self._finish = finish
        self.batch_limit = batch_limit
        self.min_interval_us = min_interval_us
        self.poll_until_empty = poll_until_empty
        self.latch_causes = latch_causes
        self.weight = weight
        self.tracer: Tracer = tracer if tracer is not None else NullTracer()
        self._items: deque[Any] = deque()
        self.state = IDLE
        self._doorbell = env.event()
        self.last_delivery_us = -float("inf")
        self._held_from_us: float | None = None
        #: The handler has read (and so cleared) the causes since its interrupt was delivered.
        self._causes_read = False
        #: The last item raised after the handler read the causes (None: nothing latched).
        self._latched: Any = None
        #: The item whose raise scheduled the latest delivery.
        self.last_cause: Any = None
        #: Interrupts delivered (the model reports it like a DrainLoop's notifications).
        self.notifications = 0
        self.mitigated = 0
        #: Interrupts raised at an unmask by a latched cause alone (its item already handled).
        self.latched = 0
        self.batches = 0
        self.items_handled = 0

    def start(self) -> None:
        """Start the handler process (after all components are wired)."""
        self.env.process(self._run())

    @property
    def asleep(self) -> bool:
        """True while the line is idle (the next raise delivers or schedules an interrupt)."""
        return self.state == IDLE

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: Any) -> bool:
        """Raise a cause for ``item``; return True if this raise scheduled an interrupt."""
        self._items.append(item)
        if self.state != IDLE:
            if self._causes_read and self.latch_causes:
                self._latched = item
            if self.tracer.enabled:
                self._trace(item, "suppressed", f"handler {self.state}, {len(self._items)} "
                                                f"queued: no new interrupt")
            return False
        self._raise(item)
        return True

    def read_causes(self) -> None:
        """The handler reads the cause register (read-to-clear): later causes latch."""
        self._causes_read = True
        self._latched = None

    def _raise(self, item: Any) -> None:
        self.last_cause = item
        now = self.env.now
        due = self.last_delivery_us + self.min_interval_us
        if due > now:
            self.state = PENDING
            self.mitigated += 1
            self._held_from_us = now
            timer = self.env.timeout(due - now)
            timer.callbacks.append(self._ring)
            if self.tracer.enabled:
                self._trace(item, "mitigated", f"interrupt held until {due:.3f} µs "
                                               f"(min interval {self.min_interval_us:g} µs)")
        else:
            self.state = RUNNING
            self._doorbell.succeed()
            if self.tracer.enabled:
                self._trace(item, "raise", "device raises the interrupt line")

    def _ring(self, _event: Any) -> None:
        self.state = RUNNING
        self._doorbell.succeed()

    def _trace(self, item: Any, kind: str, detail: str) -> None:
        req = item[1] if isinstance(item, tuple) and len(item) > 1 else None
        self.tracer.emit(self.env.now, self.scope, kind, getattr(req, "id", -1), detail)

    def _run(self) -> ProcessGenerator:
        items = self._items
        while True:
            yield self._doorbell
            self.notifications += 1
            self.last_delivery_us = self.env.now
            handled: list[Any] = []
            held_from_us, self._held_from_us = self._held_from_us, None
            yield from self._deliver(list(items), held_from_us)
            # A NAPI driver polls until the device has nothing left; a plain handler completes
            # what its status read found and leaves the rest to the next interrupt.
            while items:
                if self.weight is None:
                    count = min(len(items), self.batch_limit)
                    batch = [items.popleft() for _ in range(count)]
                    full = True
                else:  # NAPI: up to the budget's worth of work per poll
                    batch, work = [], 0
                    while items and work < self.batch_limit:
                        batch.append(items.popleft())
                        work += self.weight(batch[-1])
                    full = work >= self.batch_limit
                self.batches += 1
                self.items_handled += len(batch)
                yield from self._handle_batch(batch)
                handled.extend(batch)
                if not self.poll_until_empty or not full:
                    break  # a poll under budget completes; what came meanwhile re-raises
            yield from self._finish(handled)
            self.state = IDLE
            self._doorbell = self.env.event()
            self._causes_read = False
            latched, self._latched = self._latched, None
            if items:  # raised after the poll's last look: the unmask finds the cause
                self._raise(items[0])
            elif latched is not None:  # handled by the poll, but its cause is still latched
                self.latched += 1
                if self.tracer.enabled:
                    self._trace(latched, "latched", "the unmask finds a cause latched after "
                                                    "the handler's read: the line rises again")
                self._raise(latched)
