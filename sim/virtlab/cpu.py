"""Host cores, execution contexts (vCPUs, backend threads), and CPU-time accounting.

A piece of CPU work runs in an :class:`ExecContext` (a guest's vCPUs, a vhost worker thread, a
NAPI instance) *and* on one of the host's physical cores. Both are :class:`Semaphore` s served
first come, first served and without preemption (interrupt work may queue for a context ahead
of ordinary work, ``acquire(priority=True)``, but never preempts it); acquisition order is
always context first, then core, so no deadlock is possible. The busy time of the cores is
accounted by category (:data:`virtlab.records.CATEGORIES`) and charged to the request the work
was done for.

This FIFO, non-preemptive core pool is the baseline scheduler (``[scheduler] host = "fifo"``).
Any other scheduler plugs in as :attr:`Cpu.scheduler`, a
:class:`~virtlab.sched.topology.HostScheduler`: the context is still acquired first, then the
scheduler, not the FIFO pool, decides when the work gets a core. CPU-bound work (a busy loop)
uses :meth:`Cpu.compute`, which the scheduler may time-slice and preempt.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import simpy
from simpy.events import Event, ProcessGenerator

from virtlab.records import CATEGORIES, GUEST, Request
from virtlab.trace import NullTracer, Tracer

if TYPE_CHECKING:
    from virtlab.sched.topology import HostScheduler

__all__ = ["Semaphore", "ExecContext", "Cpu", "Step"]

#: One step of CPU work: (category index, duration in µs, label for traces and breakdowns).
Step = tuple[int, float, str]


class Semaphore:
    """A counting semaphore with FIFO hand-over, an interrupt-priority lane and a fast path.

    States of a unit: *free* or *held*. Acquirers that find no free unit wait in one queue with
    two lanes: *priority* waiters (``acquire(priority=True)``, interrupt work that a real CPU
    would take at the next instruction boundary) ahead of *ordinary* waiters, each lane in
    arrival order. Invariants:

    * ``0 <= in_use <= capacity``, and a waiter exists only while ``in_use == capacity``;
    * a released unit goes to the head of the queue: the oldest priority waiter, else the
      oldest ordinary waiter; a priority acquirer thus overtakes every ordinary waiter but
      never a holder (units are not preempted);
    * ``idle_since_us`` is the moment ``in_use`` last fell to 0 (0 before any use): with
      ``in_use == 0``, nothing has run in the semaphore since then.

    :meth:`acquire` returns ``None`` when a unit was free (the caller continues without yielding,
    which saves two SimPy events per use compared with ``Resource``), or an event to yield.
    """

    __slots__ = ("env", "name", "capacity", "in_use", "max_in_use", "idle_since_us",
                 "_waiters", "_priority_waiting")

    def __init__(self, env: simpy.Environment, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"{name}: capacity must be >= 1, got {capacity}")
        self.env = env
        self.name = name
        self.capacity = capacity
        self.in_use = 0
        self.max_in_use = 0
        self.idle_since_us = 0.0
        self._waiters: deque[Event] = deque()
        self._priority_waiting = 0  # the first _priority_waiting waiters form the priority lane

    def acquire(self, priority: bool = False) -> Event | None:
        """Take a unit now (``None``) or get an event that fires when one is handed over.

        Parameters
        ----------
        priority:
            Queue ahead of every ordinary waiter (behind earlier priority waiters). Meant for
            interrupt work; it never takes a unit from a holder.

        """
        if self.in_use < self.capacity:
            self.in_use += 1
            if self.in_use > self.max_in_use:
                self.max_in_use = self.in_use
            return None
        event = self.env.event()
        if priority:
            self._waiters.insert(self._priority_waiting, event)
            self._priority_waiting += 1
        else:
            self._waiters.append(event)
        return event

    def release(self) -> None:
        """Give a unit back, handing it to the waiter at the head of the queue if any."""
        if self._waiters:
            if self._priority_waiting:
                self._priority_waiting -= 1
            self._waiters.popleft().succeed()
        else:
            self.in_use -= 1
            if not self.in_use:
                self.idle_since_us = self.env.now

    @property
    def waiting(self) -> int:
        """Number of acquirers waiting for a unit."""
        return len(self._waiters)


class ExecContext(Semaphore):
    """Where work runs: a guest's vCPUs, a backend thread, a softirq/NAPI instance.

    ``capacity`` is the number of pieces of work the context can run at once (vCPUs, threads).
    ``role`` tells the CPU scheduler whose work this is: ``"vcpu"`` (the guest's own CPUs),
    ``"backend"`` (a vhost worker, QEMU I/O thread or driver domain) or ``"kernel"`` (interrupt
    and softirq work); ``None`` lets the scheduler infer it from the name
    (:mod:`virtlab.sched.topology`).
    """

    __slots__ = ("role",)

    def __init__(self, env: simpy.Environment, name: str, capacity: int,
                 role: str | None = None) -> None:
        super().__init__(env, name, capacity)
        self.role = role


class Cpu:
    """The host's physical cores and the accounting of their busy time.

    Parameters
    ----------
    env:
        The SimPy environment.
    cores:
        Number of physical cores.
    tracer:
        Receives one ``cpu`` event per step when enabled.

    """

    def __init__(self, env: simpy.Environment, cores: int, tracer: Tracer | None = None) -> None:
        self.env = env
        self.cores = Semaphore(env, "host.cores", cores)
        self.tracer: Tracer = tracer if tracer is not None else NullTracer()
        self.busy_us = [0.0] * len(CATEGORIES)
        #: CPU time by step label (a defaultdict: one update per step, no lookup first).
        self.label_us: defaultdict[str, float] = defaultdict(float)
        #: The scheduler deciding who gets a core; ``None``: the FIFO pool ``cores``.
        self.scheduler: HostScheduler | None = None

    def run(self, ctx: ExecContext | None, req: Request, steps: Sequence[Step]
            ) -> ProcessGenerator:
        """Run ``steps`` back to back in ``ctx`` on one core, charging them to ``req``.

        The steps are held as one block (one timeout), because nothing else can run in the same
        context in between; with tracing on, each step is still reported at its own start time.
        A block of zero total duration takes no simulated time and no core. A step may carry
        more than three fields (the paravirtual paths add a latency phase); only the first
        three are read here.

        This is the model's innermost loop (a few calls per request): it avoids SimPy events
        whenever a context and a core are free, and charges the steps after the block.
        """
        total = 0.0
        for step in steps:
            total += step[1]
        if total <= 0.0:
            return
        if ctx is not None:
            wait = ctx.acquire()
            if wait is not None:
                yield wait
        scheduler = self.scheduler
        if scheduler is None:
            wait = self.cores.acquire()
            if wait is not None:
                yield wait
        else:
            got = scheduler.acquire(scheduler.leaf_of(ctx))
            core = (yield got) if isinstance(got, Event) else got
        env = self.env
        now = env.now
        if req.start_us != req.start_us:  # NaN: the first work done for this request
            req.start_us = now
        if self.tracer.enabled:
            self._trace_steps(ctx, req, steps, now)
        yield env.timeout(total)
        if scheduler is None:
            self.cores.release()
        else:
            scheduler.finish(core)
        if ctx is not None:
            ctx.release()
        cpu_us = req.cpu_us
        busy = self.busy_us
        labels = self.label_us
        for step in steps:
            category = step[0]
            duration_us = step[1]
            cpu_us[category] += duration_us
            busy[category] += duration_us
            labels[step[2]] += duration_us

    def _trace_steps(self, ctx: ExecContext | None, req: Request, steps: Sequence[Step],
                     t: float) -> None:
        scope = ctx.name if ctx is not None else "host"
        for step in steps:
            category, duration_us, label = step[0], step[1], step[2]
            if duration_us > 0.0:
                self.tracer.emit(t, scope, "cpu", req.id,
                                 f"{label}: {duration_us:.3f} µs ({CATEGORIES[category]})")
                t += duration_us

    def compute(self, ctx: ExecContext | None, req: Request, work_us: float, label: str,
                category: int = GUEST) -> ProcessGenerator:
        """Run CPU-bound work (a busy loop) for ``work_us`` in ``ctx``, charging it to ``req``.

        Unlike :meth:`run`, the scheduler may split the work into quanta, let other work run
        in between and preempt it for freshly woken work; the context stays held throughout
        (the thread is runnable, not blocked). Under the FIFO pool it runs as one block.
        """
        if work_us <= 0.0:
            return
        scheduler = self.scheduler
        if scheduler is None:
            yield from self.run(ctx, req, ((category, work_us, label),))
            return
        if ctx is not None:
            wait = ctx.acquire()
            if wait is not None:
                yield wait
        req.mark_started(self.env.now)
        if self.tracer.enabled:
            scope = ctx.name if ctx is not None else "host"
            self.tracer.emit(self.env.now, scope, "cpu", req.id,
                             f"{label}: {work_us:.3f} µs of CPU-bound work "
                             f"({CATEGORIES[category]}), in scheduler quanta")
        yield scheduler.compute(scheduler.leaf_of(ctx), work_us)
        if ctx is not None:
            ctx.release()
        req.cpu_us[category] += work_us
        self.busy_us[category] += work_us
        self.label_us[label] += work_us
