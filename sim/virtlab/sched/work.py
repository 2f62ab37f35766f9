"""What the dispatcher moves around: leaves with their queues, jobs, cores, and a test log.

See :mod:`virtlab.sched.dispatch` for how they are used and for the states of a core, and
:mod:`virtlab.sched.runqueue` for how waiting leaves are chosen.
"""

from __future__ import annotations

from collections import deque

from simpy.events import Event

from virtlab.sched.base import INF, Node

__all__ = ["Leaf", "Job", "Core", "SchedRecorder", "MIN_QUANTUM_US"]

#: A CPU-bound stint runs at least this long, so tiny budgets cannot loop at one instant.
MIN_QUANTUM_US = 1.0


class Leaf:
    """Where the jobs of one or more execution contexts queue, below a chain of nodes.

    With per-CPU run queues a context's leaf is a *router*: ``homes[c]`` is its leaf on core
    ``c`` (``affinity = c``, ``router`` pointing back), and each job goes to one of them.
    """

    __slots__ = ("name", "chain", "queue", "waiting", "grace_core", "affinity", "homes",
                 "router")

    def __init__(self, name: str, chain: tuple[Node, ...], affinity: int | None = None) -> None:
        self.name = name
        self.chain = chain
        self.queue: deque[Job] = deque()
        self.waiting = False
        self.grace_core: Core | None = None
        self.affinity = affinity
        self.homes: list[Leaf] | None = None
        self.router: Leaf | None = None


class Job:
    """A piece of CPU work waiting for (or, if CPU-bound, running on) a core."""

    __slots__ = ("leaf", "remaining_us", "event", "preemptible", "seq", "enqueued_us")

    def __init__(self, leaf: Leaf, remaining_us: float, event: Event, preemptible: bool) -> None:
        self.leaf = leaf
        self.remaining_us = remaining_us
        self.event = event
        self.preemptible = preemptible
        self.seq = 0
        self.enqueued_us = 0.0


class Core:
    """One physical core (see the module docstring for its states)."""

    __slots__ = ("index", "leaf", "job", "grace", "stint_start_us", "job_start_us",
                 "quantum_end_us", "token")

    def __init__(self, index: int) -> None:
        self.index = index
        self.leaf: Leaf | None = None
        self.job: Job | None = None  # set only while CPU-bound work runs
        self.grace = False
        self.stint_start_us = 0.0
        self.job_start_us = 0.0
        self.quantum_end_us = INF
        self.token = 0  # bumped whenever a pending timer of this core becomes stale


class SchedRecorder:
    """Optional log for tests of who ran when, and who waited.

    ``runs``: finished stints ``(leaf, core, start, end)``; ``waits``: jobs that had to queue,
    ``(leaf, enqueued, started)``.
    """

    def __init__(self) -> None:
        self.runs: list[tuple[str, int, float, float]] = []
        self.waits: list[tuple[str, float, float]] = []
