"""Where runs execute: in this process, on a local process pool, or on a Dask cluster.

A *task* is one run ``(scenario, seed, replication)``; :func:`execute` turns it into an
:class:`Outcome` (per-workload summaries, resource utilisations, or the error). It is a pure
function of the task and virtlab's code, so results do not depend on the engine, the number
of workers or the order of completion.

Engines share one small interface (``submit``, ``wait_any``, ``pending``, ``close``):

* :class:`SerialEngine` runs tasks here, one at a time.
* :class:`PoolEngine` runs them on a ``concurrent.futures`` process pool. A worker process
  that dies (killed, out of memory) breaks the pool; the engine starts a new one and resubmits
  only the runs that were in flight, each at most ``max_attempts`` times.
* :class:`DaskEngine` runs them on a ``dask.distributed`` cluster (``--scheduler
  tcp://host:port``); Dask itself reschedules the runs of a lost worker.

:class:`Runner` puts the results store and the progress bar in front of an engine and keeps
at most ``max_in_flight`` tasks submitted, pulling new ones lazily from an iterator.
"""

from __future__ import annotations

import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from virtlab.config import Scenario
from virtlab.errors import ConfigError
from virtlab.progress import Progress
from virtlab.stats import WorkloadSummary
from virtlab.store import ResultStore, code_fingerprint

#: What the caller attaches to a task to recognise its outcome (any hashable value).
Tag = Any

__all__ = ["Task", "Outcome", "execute", "resource_utilisation", "RESOURCES", "SerialEngine",
           "PoolEngine", "DaskEngine", "make_engine", "Runner", "auto_workers"]


@dataclass(frozen=True)
class Task:
    """One run: a pure function of these three (and of virtlab's code)."""

    scenario: Scenario
    seed: int
    replication: int


@dataclass(frozen=True)
class Outcome:
    """A run's per-workload summaries and resource utilisations, or why it failed."""

    summaries: tuple[WorkloadSummary, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    #: Fingerprint of the code that computed it (a Dask worker may run another version).
    code: str = ""
    from_store: bool = False


#: Resources whose utilisation a run reports (fractions of their capacity; see
#: :func:`resource_utilisation`), in the order they are named when tied.
RESOURCES = ("host_cores", "guest_vcpus", "backend", "disk", "nic_tx", "nic_rx")


def execute(task: Task) -> Outcome:
    """Run one task; any exception becomes the outcome's error (other runs go on)."""
    from virtlab.model import run

    try:
        result = run(task.scenario, task.seed, replication=task.replication)
        return Outcome(tuple(result.summaries), resource_utilisation(result),
                       code=code_fingerprint())
    except Exception as err:  # noqa: BLE001 - one failed point must not lose the others
        return Outcome(error=f"{type(err).__name__}: {err}", code=code_fingerprint())


def resource_utilisation(result: Any) -> dict[str, float]:
    """Busy fraction of each resource that can saturate (NaN where the run does not say).

    * ``host_cores``: the summaries' ``core_utilisation`` where they carry it, else CPU time of
      completed requests in the window over cores × window (the sum of ``cpu_share``).
    * ``guest_vcpus``: the busiest guest's guest + exit CPU time in the window over its vCPUs.
    * ``backend``: the busiest guest's backend / device-model CPU time in the window, in units
      of one thread. Paths that spread that work over several threads (virtio's tx and rx
      workers) are over-estimated by up to that factor: per-thread busy time is not exposed.
    * ``disk``, ``nic_tx``, ``nic_rx``: the summaries' ``*_utilisation`` over the window where
      they carry it, else device busy time over the whole run (warm-up included) over the
      run's length (and the disk's channels), from ``RunResult.device_busy_us``.
    """
    scenario = result.scenario
    span_s = (scenario.duration_us - scenario.warmup_us) / 1e6
    summaries = list(result.summaries)
    nan = float("nan")

    def per_guest(value_of: Callable[[WorkloadSummary], float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in summaries:
            if s.requests and not math.isnan(value_of(s)):
                # CPU µs per request × requests per second = CPU µs per second.
                out[s.guest] = out.get(s.guest, 0.0) + value_of(s) * s.requests / span_s / 1e6
        return out

    vcpus = {g.name: g.vcpus for g in scenario.guests}
    guest_busy = per_guest(lambda s: s.cpu_guest_us + s.cpu_exit_us)
    backend_busy = per_guest(lambda s: s.cpu_backend_us)
    shares = [s.cpu_share for s in summaries if not math.isnan(s.cpu_share)]
    out = {
        "host_cores": _windowed(summaries, "core_utilisation",
                                sum(shares) if shares else nan),
        "guest_vcpus": max((busy / vcpus[g] for g, busy in guest_busy.items()), default=nan),
        "backend": max(backend_busy.values(), default=nan),
    }
    devices = getattr(result, "device_busy_us", None) or {}
    length_us = getattr(result, "sim_now_us", 0.0) or 0.0
    disk = scenario.disk
    channels = 1 if getattr(disk, "kind", "") == "rotating" else getattr(disk, "channels", 1)
    for name, key, servers in (("disk", "disk", channels), ("nic_tx", "nic.tx", 1),
                               ("nic_rx", "nic.rx", 1)):
        busy = devices.get(key)
        whole_run = busy / (servers * length_us) if busy is not None and length_us else nan
        out[name] = _windowed(summaries, f"{name}_utilisation", whole_run)
    return out


def _windowed(summaries: list[WorkloadSummary], field_name: str, fallback: float) -> float:
    """A run-wide utilisation the summaries carry over the window, else ``fallback``.

    Engines whose summaries have ``core_utilisation``, ``disk_utilisation``,
    ``nic_tx_utilisation`` and ``nic_rx_utilisation`` (busy time over the window, all work
    included) are preferred to the estimates above.
    """
    for summary in summaries:
        value = getattr(summary, field_name, math.nan)
        if not math.isnan(value):
            return float(value)
    return fallback


def _failed(message: str) -> Outcome:
    return Outcome(error=message, code=code_fingerprint())


def auto_workers(jobs: int | None, tasks: int | None) -> int:
    """``jobs`` or the usable CPUs, capped at the number of tasks (at least 1)."""
    if jobs is None:
        try:
            jobs = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            jobs = os.cpu_count() or 1
    if tasks is not None:
        jobs = min(jobs, tasks)
    return max(1, jobs)


class SerialEngine:
    """Runs tasks in this process, in submission order."""

    workers = 1

    def __init__(self) -> None:
        self._queue: deque[tuple[Tag, Task]] = deque()

    @property
    def pending(self) -> int:
        """Tasks submitted and not yet returned by :meth:`wait_any`."""
        return len(self._queue)

    def submit(self, tag: Tag, task: Task) -> None:
        """Queue one task."""
        self._queue.append((tag, task))

    def wait_any(self) -> list[tuple[Tag, Task, Outcome]]:
        """Run the oldest task."""
        tag, task = self._queue.popleft()
        return [(tag, task, execute(task))]

    def close(self, cancel: bool = False) -> None:
        """Drop queued tasks."""
        self._queue.clear()


def _worker_init() -> None:
    """Workers leave SIGINT to the parent (which stops them) and die on SIGTERM.

    They start with both signals blocked (see :meth:`PoolEngine.submit`), so the parent's
    handlers never run in them; the signals are unblocked once the worker's own are set.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


class PoolEngine:
    """A local process pool that survives the death of a worker process.

    Invariant: every submitted task is returned exactly once by :meth:`wait_any`, with its
    outcome, or with an error after its worker died ``max_attempts`` times.
    """

    def __init__(self, workers: int, max_attempts: int = 3) -> None:
        import multiprocessing

        self.workers = workers
        self.max_attempts = max_attempts
        self.restarts = 0
        # fork: workers start in milliseconds with virtlab already imported (spawn would
        # re-import numpy and simpy in every worker).
        methods = multiprocessing.get_all_start_methods()
        self._context = multiprocessing.get_context("fork" if "fork" in methods else None)
        self._pool: Any = None
        self._futures: dict[Any, tuple[Tag, Task, int]] = {}
        #: Results collected while recovering from a broken pool, returned by wait_any.
        self._early: list[tuple[Tag, Task, Outcome]] = []

    @property
    def pending(self) -> int:
        """Tasks submitted and not yet returned."""
        return len(self._futures) + len(self._early)

    def _ensure_pool(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=self._context,
                                             initializer=_worker_init)
        return self._pool

    def submit(self, tag: Tag, task: Task, attempt: int = 1) -> None:
        """Send one task to the pool (to a new pool if the current one broke)."""
        import signal
        from concurrent.futures.process import BrokenProcessPool

        # Workers are forked inside submit: block the stop signals meanwhile so that a new
        # worker cannot run this process's handlers before its initializer sets its own.
        masking = hasattr(signal, "pthread_sigmask")
        if masking:
            previous = signal.pthread_sigmask(signal.SIG_BLOCK,
                                              {signal.SIGINT, signal.SIGTERM})
        try:
            try:
                future = self._ensure_pool().submit(execute, task)
            except BrokenProcessPool:
                self._recover([])
                future = self._ensure_pool().submit(execute, task)
        finally:
            if masking:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self._futures[future] = (tag, task, attempt)

    def wait_any(self) -> list[tuple[Tag, Task, Outcome]]:
        """Block until at least one task finished; return every finished one."""
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        finished: list[tuple[Tag, Task, Outcome]] = []
        if self._early:
            finished, self._early = self._early, []
            return finished
        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        lost: list[tuple[Tag, Task, int]] = []
        for future in done:
            tag, task, attempt = self._futures.pop(future)
            try:
                finished.append((tag, task, future.result()))
            except BrokenProcessPool:
                lost.append((tag, task, attempt))
            except Exception as err:  # noqa: BLE001 - e.g. an unpicklable result
                finished.append((tag, task, _failed(f"{type(err).__name__}: {err}")))
        if lost:
            self._recover(lost)
            finished += self._early
            self._early = []
        return finished

    def _recover(self, lost: list[tuple[Tag, Task, int]]) -> None:
        """The pool died with the runs it held: keep finished results, rerun the others."""
        for future, (tag, task, attempt) in list(self._futures.items()):
            self._futures.pop(future)
            if future.done() and not future.cancelled() and future.exception() is None:
                self._early.append((tag, task, future.result()))
            else:
                lost.append((tag, task, attempt))
        self._discard_pool()
        self.restarts += 1
        for tag, task, attempt in lost:
            if attempt >= self.max_attempts:
                self._early.append((tag, task, _failed(
                    f"worker process died {attempt} times while running this point "
                    "(killed, or out of memory?)")))
            else:
                self.submit(tag, task, attempt + 1)

    def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:  # stop runs whose results nobody will read
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(timeout=5)

    def close(self, cancel: bool = False) -> None:
        """Shut the pool down; with ``cancel``, stop the workers at once."""
        self._futures.clear()
        self._early.clear()
        if cancel:
            self._discard_pool()
        elif self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+$")


class DaskEngine:
    """Runs tasks on a ``dask.distributed`` cluster given by its scheduler address.

    The workers must have the same virtlab installed: the :class:`Runner` rejects results
    computed by other code (their fingerprint differs).
    """

    def __init__(self, address: str, connect_timeout_s: float = 10.0) -> None:
        if not _ADDRESS.match(address):
            raise ConfigError("--scheduler", f"must be a Dask scheduler address such as "
                                             f"tcp://host:8786, got {address!r}")
        try:
            from distributed import Client, as_completed
        except ImportError as err:  # pragma: no cover - dask is a dependency
            raise ConfigError("--scheduler", f"needs dask.distributed ({err})") from err
        try:
            self.client = Client(address, timeout=connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as err:
            raise ConfigError("--scheduler", f"cannot reach a Dask scheduler at {address} "
                                             f"({type(err).__name__}: {err})") from err
        self._workers = (0, 0.0)
        self._completed = as_completed(loop=self.client.loop)
        self._meta: dict[Any, tuple[Tag, Task]] = {}

    @property
    def workers(self) -> int:
        """Worker threads in the cluster now (asked at most every 5 s: workers may join)."""
        import time

        count, asked = self._workers
        if time.monotonic() - asked > 5.0:
            count = max(1, sum(self.client.nthreads().values()))
            self._workers = (count, time.monotonic())
        return count

    @property
    def pending(self) -> int:
        """Tasks submitted and not yet returned."""
        return len(self._meta)

    def submit(self, tag: Tag, task: Task) -> None:
        """Send one task to the cluster."""
        future = self.client.submit(execute, task, pure=False)
        self._meta[future.key] = (tag, task)
        self._completed.add(future)

    def wait_any(self) -> list[tuple[Tag, Task, Outcome]]:
        """Block until one task finished (Dask retries runs of lost workers itself)."""
        future = next(self._completed)
        tag, task = self._meta.pop(future.key)
        try:
            outcome = future.result()
        except Exception as err:  # noqa: BLE001 - KilledWorker, a lost connection, ...
            outcome = _failed(f"{type(err).__name__}: {err}")
        future.release()
        return [(tag, task, outcome)]

    def close(self, cancel: bool = False) -> None:
        """Cancel what is still queued (with ``cancel``) and disconnect."""
        if cancel and self._meta:
            self.client.cancel(list(self._completed.futures))
        self._meta.clear()
        self.client.close()


def make_engine(jobs: int | None = None, scheduler: str | None = None,
                tasks: int | None = None) -> SerialEngine | PoolEngine | DaskEngine:
    """A Dask engine for ``scheduler``, else a pool of :func:`auto_workers` (serial if 1)."""
    if scheduler:
        return DaskEngine(scheduler)
    workers = auto_workers(jobs, tasks)
    return SerialEngine() if workers == 1 else PoolEngine(workers)


class Runner:
    """An engine behind the results store and a progress bar.

    Store hits never reach the engine; computed results are stored as they arrive (before
    anyone else sees them), failed ones are not. Use as a context manager: leaving it by an
    exception (Ctrl-C) stops the engine's workers at once.
    """

    def __init__(self, engine: Any, store: ResultStore | None = None,
                 progress: Progress | None = None) -> None:
        self.engine = engine
        self.store = store
        self.progress = progress or Progress(None, "", enabled=False)
        self._ready: deque[tuple[Tag, Outcome]] = deque()
        self._restarts = 0

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        self.engine.close(cancel=kind is not None)
        self.progress.close()

    @property
    def outstanding(self) -> int:
        """Tasks submitted whose outcome has not been returned yet."""
        return len(self._ready) + self.engine.pending

    def submit(self, tag: Tag, task: Task) -> None:
        """Look the task up in the store, else hand it to the engine."""
        if self.store is not None:
            stored = self.store.get(task.scenario, task.seed, task.replication)
            if stored is not None:
                self._ready.append((tag, Outcome(stored.summaries, stored.resources,
                                                 from_store=True)))
                self.progress.from_store()
                return
        self.engine.submit(tag, task)
        self._note_restarts()

    def _note_restarts(self) -> None:
        restarts = getattr(self.engine, "restarts", 0)
        if restarts != self._restarts:
            self._restarts = restarts
            self.progress.write("virtlab: warning: a worker process died; the runs it held "
                                "are rerun on a new one")

    def next_done(self) -> tuple[Tag, Outcome]:
        """The next finished task (blocks while none is)."""
        while not self._ready:
            finished = self.engine.wait_any()
            self._note_restarts()
            for tag, task, outcome in finished:
                if not outcome.error and outcome.code != code_fingerprint():
                    outcome = _failed(f"the worker runs different virtlab code (fingerprint "
                                      f"{outcome.code}, here {code_fingerprint()}); install "
                                      "the same version on every worker")
                if outcome.error is None and self.store is not None:
                    try:
                        self.store.put(task.scenario, task.seed, task.replication,
                                       outcome.summaries, outcome.resources)
                    except OSError as err:
                        self.store.warn(f"store: cannot write ({err}); the result is kept "
                                        "in memory only")
                self.progress.computed(failed=outcome.error is not None)
                self._ready.append((tag, outcome))
        return self._ready.popleft()

    def map(self, items: Iterable[tuple[Tag, Task]],
            max_in_flight: int | None = None) -> Iterator[tuple[Tag, Outcome]]:
        """Outcomes of ``items`` in completion order, pulling at most ``max_in_flight`` ahead."""
        source = iter(items)
        exhausted = False
        while True:
            limit = max_in_flight or 4 * self.engine.workers
            while not exhausted and self.outstanding < limit:
                item = next(source, None)
                if item is None:
                    exhausted = True
                else:
                    self.submit(*item)
            if not self.outstanding:
                return
            yield self.next_done()
