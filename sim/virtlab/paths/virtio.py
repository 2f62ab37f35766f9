"""The virtio transport both devices share: queues, kicks, the backend worker and its interrupts.

:class:`VirtioDevice` is the plumbing between a guest driver and its backend over real split
virtqueues (:mod:`virtlab.paths.virtqueue`): the guest's kick (an ioeventfd exit) and the
backend's interrupt (irqfd injection), each sent only if the ring's suppression rule says so,
and the backend worker's sleep, wake-up and busy polling. What each device does on top is in
:mod:`virtlab.paths.virtio_net` and :mod:`virtlab.paths.virtio_blk` (Linux's guest drivers) and
:mod:`virtlab.paths.virtio_backends` (the backends' handlers). The rules they follow:

Guest side (S4, S5, S46):

* transmit adds one chain per packet (12-byte header + data), kicks once at the end of the burst
  if :meth:`~virtlab.paths.virtqueue.SplitVirtqueue.kick_prepare` says so, reclaims finished
  chains at the next transmit, and stops the queue when fewer than ``tx_stop_free`` descriptors
  are free; a stopped queue asks for a *delayed* interrupt (3/4 rule) and restarts from it;
* receive is NAPI: the interrupt disables callbacks, polls at most ``napi_budget`` packets,
  refills buffers when ``rx_refill_fraction`` of the ring is free, and re-enables callbacks
  (re-checking the ring) only when a poll ends under budget;
* a block request is a chain of header + data + status; completions are reaped until
  re-enabling callbacks finds the used ring empty.

Backend side (S6, S7): one worker per device sleeps on a :class:`~virtlab.paths.pvcommon.Doorbell`
(the ioeventfd) with notifications enabled; woken, it disables them, serves chains, publishes
used entries in batches of ``vhost_signal_batch`` and interrupts only if ``need_interrupt``
says so; after ``vhost_pkt_weight`` packets or ``vhost_byte_weight_bytes`` it yields; when the
ring is empty it (optionally busy-polls, then) re-enables notifications and re-checks before
sleeping. The QEMU backend is the same loop in user space: waking it takes
``qemu_notify_latency_us`` and each packet costs a tap syscall.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simpy.events import Event, ProcessGenerator

from virtlab.cpu import ExecContext
from virtlab.paths.pvcommon import (
    EXIT_INJECT,
    EXIT_MMIO,
    PH_EXITS,
    PH_GUEST,
    PH_INTERRUPT,
    PH_QUEUEING,
    PH_WAKEUP,
    Doorbell,
    PhasedStep,
    RingMonitor,
    count_exits,
    run_phased,
)
from virtlab.paths.splitdriver import SplitDriver
from virtlab.paths.virtqueue import SplitVirtqueue
from virtlab.records import BACKEND, EXIT, HOST, Request

if TYPE_CHECKING:
    from virtlab.paths.paravirtual import ParavirtualPath

__all__ = ["VirtioDevice"]


class VirtioDevice(SplitDriver):
    """What both virtio devices share: queues, kicks, the worker's wake-up, signalling.

    The backend worker is one thread (``worker``) sleeping on ``kick_bell`` (its ioeventfd).

    Parameters
    ----------
    path:
        The paravirtual path this device belongs to (host, vCPU, parameters, tracer).
    kind:
        ``"net"`` or ``"blk"``, used in scope names.

    """

    def __init__(self, path: ParavirtualPath, kind: str) -> None:
        super().__init__(path, f"virtio-{kind}")
        p = path.params
        self.backend_name = "vhost" if p.backend == "vhost" else "qemu"
        # Upstream Linux has no in-kernel vhost-blk: next to vhost-net, virtio-blk is served by
        # a QEMU I/O thread (dataplane, ``-object iothread``) woken through its ioeventfd, which
        # costs what a vhost worker's wake-up costs. ``backend_name`` keeps the cost rules.
        self.worker_label = ("qemu-iothread" if kind == "blk" and p.backend == "vhost"
                             else self.backend_name)
        if kind == "blk" and p.blk_backend == "vhost-user-blk":
            # Its own process, woken (in interrupt mode) through the kick eventfd directly.
            self.backend_name = "vhost"
            self.worker_label = "vhost-user"   # the thread is "<guest>.vhost-user-blk"
        self.worker = ExecContext(self.env, f"{path.name}.{self.worker_label}-{kind}", 1)
        self.kick_bell = Doorbell(self.env, f"{self.worker.name}.kick")
        self.kicks = self.suppressed_kicks = self.interrupts = self.suppressed_interrupts = 0
        self.worker_wakeups = 0
        self.busy_poll_us = 0.0
        #: Polling time on a core not yet charged to a request (:meth:`_settle_poll`).
        self._poll_debt_us = 0.0
        self._poll_waiter: Event | None = None
        # The worker's wake cost is charged to the first request it serves after waking.
        self._wake_due = False
        self._gap_is_wakeup = False
        self._wake_label = f"wake {self.worker.name}"

    def _queue(self, name: str) -> tuple[SplitVirtqueue, RingMonitor]:
        p = self.params
        vq = SplitVirtqueue(p.ring_size, event_idx=p.event_idx, indirect=p.indirect_descriptors,
                            start_index=p.start_index, delay_fraction=p.tx_irq_delay_fraction)
        return vq, self._monitor(name, p.ring_size)

    # Guest side ---------------------------------------------------------------------------------
    def _kick(self, vq: SplitVirtqueue, scope: str, req: Request) -> ProcessGenerator:
        """End of a burst: notify the backend (a lightweight ioeventfd exit) if the ring says so.

        Called with a vCPU held (:meth:`ParavirtualPath.hold_vcpu`): the exit follows the
        driver's work without other work on the vCPU in between.
        """
        kick = vq.kick_prepare()
        if self.host.tracer.enabled:
            old, new = vq.last_kick_window
            rule = (f"avail_event={vq.avail_event} in [{old},{new})?" if vq.event_idx
                    else f"NO_NOTIFY={vq.used_flags & 1}")
            self._trace(scope, "kick" if kick else "kick-suppressed", req,
                        f"{rule} -> {'notify' if kick else 'no notification'}")
        if not kick:
            self.suppressed_kicks += 1
            self.poke()
            return
        self.kicks += 1
        req.notifications += 1
        count_exits(req, EXIT_MMIO, 1, self.host.exit_kernel_us)
        yield from run_phased(self.host.cpu, self.path.vcpu_held, req, (
            (EXIT, self.host.exit_kernel_us, "kick: ioeventfd exit", PH_EXITS),), PH_GUEST)
        self._queue_work(vq)
        self.kick_bell.ring()
        self.poke()   # a polling thread sees the new chain whether or not the kick came

    def _queue_work(self, vq: SplitVirtqueue) -> None:
        """A kick on ``vq`` queues the handler of that queue (subclasses with several)."""

    # Backend side -------------------------------------------------------------------------------
    def poke(self) -> None:
        """New work is visible in the ring: a busy-polling worker notices it (no exit)."""
        waiter = self._poll_waiter
        if waiter is not None:
            self._poll_waiter = None
            waiter.succeed()

    def _busy_poll(self, limit_us: float) -> ProcessGenerator:
        """Poll with notifications off until work appears or ``limit_us`` passes.

        The polling thread is assumed to have a core to itself: the time is reported as
        ``busy_poll_us`` rather than taken from the shared cores.
        """
        start = self.env.now
        self._poll_waiter = self.env.event()
        yield self._poll_waiter | self.env.timeout(limit_us)
        found = self._poll_waiter is None
        self._poll_waiter = None
        self.busy_poll_us += self.env.now - start
        return found

    def _has_work(self) -> bool:
        """Whether a polling thread would find work now (subclasses that poll)."""
        return False

    def _poll_on_core(self, limit_us: float, label: str, trace_idle: bool = True
                      ) -> ProcessGenerator:
        """Busy-poll in the worker on a host core until work is poked or ``limit_us`` passes.

        Unlike :meth:`_busy_poll` the thread holds its context and a core while it polls, and
        the time is host CPU time (backend, ``label``): polling competes for the host's cores.
        It is owed by the next request the thread serves (:meth:`_settle_poll`): the price of
        waiting for it. Returns True if work appeared. ``trace_idle=False`` leaves a poll that
        found nothing out of the trace (a reactor's idle slices, all run long).
        """
        cpu = self.host.cpu
        env = self.env
        ctx = self.worker
        wait = ctx.acquire()
        if wait is not None:
            yield wait
        scheduler = cpu.scheduler
        core = None
        if scheduler is None:
            wait = cpu.cores.acquire()
            if wait is not None:
                yield wait
        else:
            got = scheduler.acquire(scheduler.leaf_of(ctx))
            core = (yield got) if isinstance(got, Event) else got
        start = env.now
        found = False
        if self._poll_waiter is None and not self._has_work():
            self._poll_waiter = env.event()
            yield self._poll_waiter | env.timeout(limit_us)
            found = self._poll_waiter is None
            self._poll_waiter = None
        else:
            found = True
        if scheduler is None:
            cpu.cores.release()
        else:
            scheduler.finish(core)
        ctx.release()
        spent = env.now - start
        if spent > 0.0:
            cpu.busy_us[BACKEND] += spent
            cpu.label_us[label] += spent
            self._poll_debt_us += spent
            self.busy_poll_us += spent
            if self.host.tracer.enabled and (found or trace_idle):
                self.host.tracer.emit(start, ctx.name, "cpu", -1,
                                      f"{label}: {spent:.3f} µs (backend)")
        return found

    def _settle_poll(self, req: Request) -> None:
        """Charge the polling done since the last request served to ``req``'s CPU time.

        The host's busy time already has it.
        """
        if self._poll_debt_us:
            req.cpu_us[BACKEND] += self._poll_debt_us
            self._poll_debt_us = 0.0

    def _sleep(self) -> ProcessGenerator:
        """Sleep on the kick eventfd; on waking, pay the wake-up (QEMU: notify latency)."""
        if not (yield from self.kick_bell.sleep()):
            return
        self.worker_wakeups += 1
        self._wake_due = True
        # QEMU's end-to-end notify latency (S29) already includes its thread's wake-up.
        delay = (self.params.qemu_notify_latency_us if self.backend_name == "qemu"
                 else self.params.vhost_wake_latency_us)
        if delay > 0.0:
            if self.host.tracer.enabled:
                self.host.tracer.emit(self.env.now, self.worker.name, "wake-latency", -1,
                                      f"the worker's core wakes up: {delay:.3f} µs")
            yield self.env.timeout(delay)
        if not self.params.event_idx:
            # With flag hints the worker sets NO_NOTIFY only once it runs, so the wake-up is a
            # window in which kicks still come (event index needs no such step: its
            # disable_notify is a no-op). Elsewhere the wake-up is merged into the first work.
            yield from self.path.run_unaccounted(self.worker, (
                (BACKEND, self.host.params.ctx_switch_us, self._wake_label, PH_WAKEUP),))
            self._wake_due = False
            self._gap_is_wakeup = True

    def _backend_steps(self, req: Request, steps: list[PhasedStep]) -> tuple[list[PhasedStep],
                                                                            int]:
        """Prepend the wake-up to the first work after waking; return steps and gap phase."""
        if not self._wake_due:
            if self._gap_is_wakeup:
                self._gap_is_wakeup = False
                return steps, PH_WAKEUP
            return steps, PH_QUEUEING
        self._wake_due = False
        wake = (BACKEND, self.host.params.ctx_switch_us, self._wake_label, PH_WAKEUP)
        return [wake, *steps], PH_WAKEUP

    def _run_backend(self, req: Request, steps: list[PhasedStep],
                      event: tuple[str, str, str] | None = None) -> ProcessGenerator:
        """Run backend work (after the wake-up, if due) and trace a ring event at its start.

        ``event = (scope, kind, detail)`` is emitted at the moment the work after the wake-up
        began, so a trace reads wake -> pop -> work even though the chain was read first.
        """
        steps, gap = self._backend_steps(req, steps)
        yield from run_phased(self.host.cpu, self.worker, req, steps, gap)
        if event is not None and self.host.tracer.enabled:
            work_us = sum(s[1] for s in steps if s[2] != self._wake_label)
            self.host.tracer.emit(self.env.now - work_us, event[0], event[1], req.id, event[2])

    def _signal(self, vq: SplitVirtqueue, scope: str, req: Request, irq: Doorbell,
                account: bool, user_space: bool = False) -> ProcessGenerator:
        """Publish the used index; interrupt the guest (irqfd injection) if the ring says so.

        ``user_space``: the back-end is a user-space thread, which signals the irqfd with a
        ``write`` (``event_notifier_set``) before KVM injects.
        """
        vq.flush_used()
        need = vq.need_interrupt()
        if self.host.tracer.enabled:
            old, new = vq.last_signal_window
            if not vq.callbacks_enabled:
                rule = "driver polls, callbacks off:"
            elif vq.event_idx:
                rule = f"used_event={vq.used_event} in [{old},{new})?"
            else:
                rule = f"NO_INTERRUPT={vq.avail_flags & 1}"
            self._trace(scope, "interrupt" if need else "irq-suppressed", req,
                        f"{rule} {vq.indexes()}")
        if not need:
            if vq.used_idx != vq.last_signal_window[0]:
                self.suppressed_interrupts += 1
            return
        self.interrupts += 1
        req.interrupts += 1
        inject = self.host.irq_inject_us
        steps: list[PhasedStep] = []
        if user_space:
            steps.append((HOST, self.host.params.syscall_us, "irqfd: eventfd write",
                          PH_INTERRUPT))
        if inject > 0.0:
            count_exits(req, EXIT_INJECT, 1, inject)
            steps.append((EXIT, inject, "irqfd: inject interrupt", PH_INTERRUPT))
        if steps:
            yield from run_phased(self.host.cpu, self.worker, req, steps, PH_QUEUEING,
                                  account=account)
        irq.ring()

    def counters(self) -> dict[str, int]:
        """Kicks, interrupts and wake-ups, sent and suppressed."""
        return {f"{self.scope}.kicks": self.kicks,
                f"{self.scope}.kicks_suppressed": self.suppressed_kicks,
                f"{self.scope}.interrupts": self.interrupts,
                f"{self.scope}.interrupts_suppressed": self.suppressed_interrupts,
                f"{self.scope}.backend_wakeups": self.worker_wakeups}


