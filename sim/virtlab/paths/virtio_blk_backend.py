"""virtio-blk's back-ends as they exist: a QEMU I/O thread (three host AIO modes) or vhost-user-blk.

One thread serves the request queue (``paravirtual.blk_backend``; docs/paravirtual.md):

* **QEMU I/O thread** (dataplane, ``-object iothread``; S120-S124). The guest's kick is an
  ioeventfd the thread sleeps on. ``virtio_blk_handle_vq`` pops every request queued and
  submits them between ``blk_io_plug`` / ``blk_io_unplug``, so one submission syscall covers
  the batch; how depends on the drive's ``aio`` mode:

  - ``qemu-threads`` (``aio=threads``, QEMU's default, S120, S123): each request goes to the
    thread pool (``thread_pool_submit_aio``: a futex wake per request); a pool worker wakes,
    does a blocking ``preadv``/``pwritev``, wakes again when the disk is done and signals the
    pool's event notifier (a ``write``, only if the I/O thread sleeps: ``aio_notify``);
  - ``qemu-aio`` (``aio=native``, S121): ``laio_do_submit`` queues an iocb, ``ioq_submit``
    issues one ``io_submit`` per batch; completions signal an eventfd the thread reads once
    per batch, then it reads the events from the user-space completion ring;
  - ``qemu-io-uring`` (``aio=io_uring``, S122): ``luring_do_submit`` fills SQEs,
    ``ioq_submit`` issues one ``io_uring_enter`` per batch; completions are read from the CQ
    ring the thread polls through the ring fd, without a syscall.

  Finished requests go on the used ring; the guest is interrupted through the irqfd (a
  ``write`` from user space, then KVM's injection). With ``blk_iothread_poll_us`` > 0 the
  thread busy-polls before it sleeps (``aio_poll`` / ``try_poll_mode``, S124): the ring and
  the completions are checked with the guest's kicks left off, for an adaptive window
  (``adjust_polling_time``: 0, then 4 µs, doubled after each sleep shorter than the maximum,
  back to 0 after a sleep longer than it). Polling time is CPU time on a host core.

* **vhost-user-blk** (an SPDK-style user-space back-end, S125, S126): its own reactor thread
  reads the rings in the shared guest memory and drives the disk through a user-space NVMe
  driver (``blk_spdk_per_io_us`` per request: no syscalls, no host block layer). In poll mode
  (``blk_iothread_poll_us`` > 0) the reactor never sleeps and turns the guest's kicks off for
  good ("Disable I/O submission notifications, we'll be polling"); its core is busy all the
  time. With 0 it runs in interrupt mode: it sleeps on the kick eventfd like an I/O thread.

Every thread here (I/O thread, pool workers, reactor) runs its work on the host's cores, where
it competes with the vCPUs and everything else.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext, Semaphore
from virtlab.paths.pvcommon import (
    PH_BACKEND,
    PH_HOST,
    PH_QUEUEING,
    Doorbell,
    PhasedStep,
    mark,
    run_phased,
)
from virtlab.paths.virtio import VirtioDevice
from virtlab.records import BACKEND, HOST

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["VirtioBlkBackend", "BLK_HDR_BYTES", "BLK_STATUS_BYTES", "POLL_START_US",
           "REACTOR_SLICE_US"]

#: virtio-blk request header (type, reserved, sector) and status byte (S1 "Device Operation").
BLK_HDR_BYTES = 16
BLK_STATUS_BYTES = 1
#: QEMU's first polling window once polling grows from 0 (util/aio-posix.c: 4000 ns, S124).
POLL_START_US = 4.0
#: The reactor's polling is charged in slices this long, so a run's CPU time lags by at most
#: one slice (a bookkeeping choice, not a mechanism).
REACTOR_SLICE_US = 1000.0


class VirtioBlkBackend(VirtioDevice):
    """virtio-blk's request queue and the back-end thread serving it.

    Chains finished by the disk wait in ``_completed`` until the thread puts them on the used
    ring; a completion pokes a polling thread and rings ``kick_bell`` (the thread's eventfd)
    as the back-end's completion path would (:meth:`_finished`).
    Invariants: ``0 <= poll_window_us <= blk_iothread_poll_us``; a reactor in poll mode never
    re-enables the guest's kicks.
    """

    def __init__(self, path: ParavirtualPath) -> None:
        super().__init__(path, "blk")
        p = self.params
        self.kind = p.blk_backend
        self.vq, self.monitor = self._queue("vq")
        self.irq = Doorbell(self.env, f"{self.scope}.irq")
        self._completed: deque[Any] = deque()
        self.poll_max_us = p.blk_iothread_poll_us
        #: The reactor of vhost-user-blk in poll mode: it never sleeps.
        self.reactor = self.kind == "vhost-user-blk" and self.poll_max_us > 0.0
        #: QEMU's adaptive polling window (``poll_ns``), grown and shrunk after each sleep.
        self.poll_window_us = 0.0
        self.polls_found = 0
        #: Whether the guest's kicks are on (``vq->notification``): on while the thread sleeps
        #: and after a final check, off from the start of a poll (``io_poll_begin``).
        self._notify_on = not self.reactor
        self.pool_threads: Semaphore | None = None
        self.pool: ExecContext | None = None
        if self.kind == "qemu-threads":
            self.pool_threads = Semaphore(self.env, f"{path.name}.qemu-pool.threads",
                                          p.blk_thread_pool_size)
            self.pool = ExecContext(self.env, f"{path.name}.qemu-pool", p.blk_thread_pool_size)
        self._poll_label = f"{self.worker_label}-blk: poll"

    def counters(self) -> dict[str, int]:
        """Base counters plus polls that found work."""
        return {**super().counters(), f"{self.scope}.polls_found": self.polls_found}

    # The thread's loop ---------------------------------------------------------------------------
    def _worker_loop(self) -> ProcessGenerator:
        if self.reactor:
            yield from self._reactor_loop()
            return
        idle_since: float | None = None
        while True:
            yield from self._sleep()
            if idle_since is not None:
                self._adjust_poll(self.env.now - idle_since)
                idle_since = None
            while True:
                did = yield from self._submit()
                did = (yield from self._complete()) or did
                if did:
                    continue
                idle_since = self.env.now
                if self.poll_window_us > 0.0:
                    self._notify_on = False   # io_poll_begin: kicks off while polling
                    if (yield from self._poll_on_core(self.poll_window_us, self._poll_label)):
                        self.polls_found += 1   # within the window: block <= poll, no change
                        idle_since = None
                        continue
                # The final check (io_poll_end): re-enable the guest's kicks and look once
                # more, at the ring and at completions; nothing runs between it and the sleep.
                self._notify_on = True
                if self.vq.enable_notify() or self._completed:
                    self.vq.disable_notify()
                    idle_since = None
                    continue
                break

    def _reactor_loop(self) -> ProcessGenerator:
        """vhost-user-blk in poll mode: kicks off for good, poll the rings and the disk."""
        self.vq.disable_notify()
        while True:
            did = yield from self._submit()
            did = (yield from self._complete()) or did
            if not did and (yield from self._poll_on_core(REACTOR_SLICE_US, self._poll_label,
                                                          trace_idle=False)):
                self.polls_found += 1

    def _adjust_poll(self, block_us: float) -> None:
        """QEMU's ``adjust_polling_time`` after a sleep of ``block_us`` (poll time included)."""
        limit = self.poll_max_us
        window = self.poll_window_us
        if limit <= 0.0 or block_us <= window:
            return
        if block_us > limit:
            self.poll_window_us = 0.0   # poll-shrink 0: stop polling
        elif window < limit and block_us < limit:
            self.poll_window_us = min(limit, window * 2.0 if window else POLL_START_US)

    def _has_work(self) -> bool:
        return self.vq.has_avail() or bool(self._completed)

    # Submission ----------------------------------------------------------------------------------
    def _submit(self) -> ProcessGenerator:
        """Pop every queued request, then submit them as one batch.

        ``virtio_blk_handle_vq`` pops between ``blk_io_plug`` and ``blk_io_unplug``.
        """
        p = self.params
        vq = self.vq
        scope = f"{self.scope}.vq"
        weight = p.qemu_tx_burst if self.backend_name == "qemu" else p.vhost_pkt_weight
        popped: list[tuple[int, Any]] = []
        # virtio_blk_handle_vq: with the guest's kicks on it turns them off while it pops and
        # ends with the final check (on again, look again); in poll mode they stay off.
        final_check = self._notify_on
        if final_check:
            vq.disable_notify()
        while len(popped) < weight:
            chain = vq.pop()
            if chain is None:
                if final_check and vq.enable_notify():
                    vq.disable_notify()
                    continue
                break
            token = vq.token_of(chain.head)
            self._settle_poll(token[0])
            event = ((scope, "pop", f"head={chain.head} ({len(chain.elements)} elements) "
                                    f"{vq.indexes()}") if self.host.tracer.enabled else None)
            yield from self._run_backend(token[0], [
                (BACKEND, p.backend_pkt_us, f"{self.worker_label}-blk: pop request",
                 PH_BACKEND)], event)
            popped.append((chain.head, token))
        if not popped:
            return False
        self.monitor.batch(len(popped))
        for k, (head, token) in enumerate(popped):
            # blk_io_unplug: one submission syscall for the batch, then each request's work.
            yield from self._run_backend(token[0], self._submit_steps(k == 0))
            if self.kind == "qemu-threads":
                self.env.process(self._pool_io(head, token))
            else:
                self.env.process(self._serve(head, token))
        return True

    def _submit_steps(self, first: bool) -> list[PhasedStep]:
        """The host work of submitting one request (``first``: it carries the batch's syscall)."""
        hp = self.host.params
        p = self.params
        kind = self.kind
        if kind == "qemu-threads":
            return [(HOST, hp.syscall_us, "qemu: thread pool submit (futex wake)", PH_HOST)]
        if kind == "vhost-user-blk":
            return [(BACKEND, p.blk_spdk_per_io_us, "vhost-user-blk: user-space NVMe submit "
                                                     "+ polled completion", PH_BACKEND)]
        per_io, call = ((p.blk_aio_per_io_us, "io_submit") if kind == "qemu-aio"
                        else (p.blk_uring_per_io_us, "io_uring_enter"))
        steps: list[PhasedStep] = []
        if first:
            steps.append((HOST, hp.syscall_us, f"qemu: {call} (per batch)", PH_HOST))
        steps.append((HOST, per_io + 0.5 * hp.blk_io_us,
                      f"host: {kind[5:]} per request + block layer", PH_HOST))
        return steps

    def _serve(self, head: int, token: Any) -> ProcessGenerator:
        """Asynchronous submission (AIO, io_uring, user-space NVMe): the disk, then the event."""
        req, size, _state, write, sequential = token
        yield from self._serve_disk(req, size, write, sequential)
        self._finished(head, token)

    def _pool_io(self, head: int, token: Any) -> ProcessGenerator:
        """A thread-pool worker: wake, blocking preadv/pwritev, wake again, notify the thread."""
        assert self.pool_threads is not None and self.pool is not None
        req, size, _state, write, sequential = token
        hp = self.host.params
        mark(req, PH_HOST, self.env.now)
        wait = self.pool_threads.acquire()   # a free worker thread (64 by default)
        if wait is not None:
            yield wait
        yield from self._run_steps(self.pool, req, [
            (HOST, hp.ctx_switch_us, "qemu pool worker: wake up", PH_HOST),
            (HOST, hp.syscall_us + 0.5 * hp.blk_io_us,
             f"qemu pool worker: {'pwritev' if write else 'preadv'} + block layer", PH_HOST)])
        yield from self._serve_disk(req, size, write, sequential)
        steps: list[PhasedStep] = [
            (HOST, hp.ctx_switch_us + 0.5 * hp.blk_io_us,
             "qemu pool worker: woken by the disk, syscall returns", PH_HOST)]
        if self.kick_bell.sleeping:   # aio_notify writes the eventfd only to a sleeping thread
            steps.append((HOST, hp.syscall_us, "qemu pool worker: event notifier write",
                          PH_HOST))
        yield from self._run_steps(self.pool, req, steps)
        self.pool_threads.release()
        self._finished(head, token)

    def _run_steps(self, ctx: ExecContext, req: Any, steps: list[PhasedStep]
                   ) -> ProcessGenerator:
        yield from run_phased(self.host.cpu, ctx, req, steps, PH_QUEUEING)

    def _finished(self, head: int, token: Any) -> None:
        """A request left the disk: a polling thread sees it; a sleeping one is woken.

        Linux AIO's kernel signals its eventfd for every completion, so a thread that is awake
        finds it readable at its next sleep (and reads it then); the thread pool notifies only
        a sleeping thread (``aio_notify``), and io_uring's ring fd and the NVMe queue are
        readable only while completions are unconsumed.
        """
        self._completed.append((head, token))
        self.poke()
        if self.kind == "qemu-aio" or self.kick_bell.sleeping:
            self.kick_bell.ring()   # host-internal, no exit

    # Completion ----------------------------------------------------------------------------------
    def _complete(self) -> ProcessGenerator:
        """Put finished requests on the used ring; interrupt per ``vhost_signal_batch``."""
        host = self.host
        hp = host.params
        p = self.params
        vq = self.vq
        scope = f"{self.scope}.vq"
        pending = 0
        req = None
        count = 0
        kind = self.kind
        while self._completed:
            head, token = self._completed.popleft()
            req = token[0]
            self._settle_poll(req)
            steps: list[PhasedStep] = []
            if count == 0 and kind in ("qemu-threads", "qemu-aio"):
                # event_notifier_test_and_clear: one read of the eventfd per batch.
                steps.append((HOST, hp.syscall_us, "qemu: read completion eventfd", PH_HOST))
            count += 1
            if kind in ("qemu-aio", "qemu-io-uring"):
                steps.append((HOST, 0.5 * hp.blk_io_us, "host: block layer completion",
                              PH_HOST))
            steps.append((BACKEND, p.backend_pkt_us, f"{self.worker_label}-blk: push used",
                          PH_BACKEND))
            yield from self._run_backend(req, steps)
            vq.add_used(head, token[1] + BLK_STATUS_BYTES)
            if host.tracer.enabled:
                self._trace(scope, "used", req, f"head={head} {vq.indexes()}")
            pending += 1
            if pending >= p.vhost_signal_batch or not self._completed:
                yield from self._signal(vq, scope, req, self.irq, account=True,
                                        user_space=True)
                self.monitor.update(vq.outstanding)
                pending = 0
        return count > 0


