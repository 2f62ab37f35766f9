"""Full virtualization: trap-and-emulate devices driven by register-level access profiles.

The unmodified guest driver programs an emulated device through its registers. Which accesses
each operation makes is data (:mod:`virtlab.paths.emulation.accesses`: e1000 and pcnet32 NICs,
AHCI and IDE disks); every access traps and is priced by who emulates it and by the CPU support
preset (:mod:`virtlab.paths.emulation.exits`). Per request (S8, S17-S20):

* **transmit**: guest stack -> descriptors in guest memory -> doorbell (e1000: TDT write per
  burst; pcnet32: RAP + RDP per packet) -> the device model walks the descriptors, copies the
  payload out of guest memory (``dma_copies``), segments it into wire frames in software and
  writes each to the tap (``tap_copies``), on the vCPU's thread (blocking it) or on the VMM's
  I/O thread -> wire; it then raises a transmit-done interrupt;
* **receive**: host NIC + bridge -> the VMM's I/O thread reads the tap and copies each frame
  into a guest buffer -> receive interrupt -> handler (trapping accesses, EOI) -> poll (guest
  stack) -> refill (e1000: RDT) -> unmask (trapping accesses) -> application;
* **disk**: command slot (AHCI 32, IDE 1) -> issue accesses -> device model submits AIO ->
  device -> completion on the I/O thread -> interrupt (handler accesses) -> application;
  with IDE PIO (``ide_transfer = "pio"``, :mod:`virtlab.paths.emulation.pio`) the data moves
  through the data port instead, an interrupt per 16-sector block and an exit per sector.

An interrupt that finds the guest's vCPUs halted first wakes one, as on every VM path
(:meth:`~virtlab.paths.vm.VmPath.vcpu_wake_steps`: the HLT exit and, past KVM's halt polling,
the vCPU thread's wake-up).

Each request's latency is split into phases (:mod:`virtlab.paths.emulation.phases`) and its
exits counted by reason (MMIO, port I/O, interrupt injection, EOI).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext, Semaphore
from virtlab.drain import DrainLoop
from virtlab.host import BLK, BLK_DONE, RX, TX, TX_DONE, Host
from virtlab.paths.emulation.exits import LEVEL_TRIGGERED, ExitCosts, OperationCost, combine
from virtlab.paths.emulation.interrupts import DeviceInterrupt
from virtlab.paths.emulation.phases import (
    COPIES,
    DEVICE,
    DEVICE_MODEL,
    EXITS,
    HOST_KERNEL,
    INTERRUPT,
    charge,
    enter,
)
from virtlab.paths.emulation.phases import GUEST as P_GUEST
from virtlab.paths.emulation.pio import SECTOR_BYTES, PioCosts
from virtlab.paths.emulation.plans import Plan, Planner
from virtlab.paths.emulation.settings import EmulatedParams
from virtlab.paths.vm import PH_VCPU_WAKEUP, VmPath
from virtlab.records import BACKEND, EXIT, GUEST, HOST, Request

__all__ = ["EmulatedPath", "EmulatedParams"]


class EmulatedPath(VmPath):
    """A guest using emulated hardware.

    Components beyond :class:`~virtlab.paths.vm.VmPath`: the VMM's I/O thread ``iothread``
    (tap receive, disk completions, and transmits or submissions when
    ``device_model_thread = "iothread"``), the controller's command slots ``tags`` (its
    ``queue_depth``), and the devices' interrupt lines ``guest_nic`` and ``guest_blk``
    (:class:`~virtlab.paths.emulation.interrupts.DeviceInterrupt`).
    """

    approach: ClassVar[str] = "emulated"

    def __init__(self, host: Host, name: str, vcpu: ExecContext,
                 params: EmulatedParams | None = None) -> None:
        super().__init__(host, name, vcpu)
        p = self.params = params if params is not None else EmulatedParams()
        env = host.env
        hp = host.params
        self.iothread_ctx = ExecContext(env, f"{name}.vmm-iothread", 1)
        # Interrupt work runs on one of the guest's vCPUs, taken at interrupt priority
        # (vcpu.acquire(priority=True)); this context only names that work for CPU schedulers.
        self.irq_ctx = ExecContext(env, f"{name}.vcpu-intr", vcpu.capacity)
        if hasattr(self.irq_ctx, "role"):
            self.irq_ctx.role = "vcpu"
        self.iothread = DrainLoop(env, f"{name}.vmm-iothread", self._iothread_batch,
                                  batch_limit=hp.napi_budget, on_wake=self._iothread_wake,
                                  tracer=host.tracer)
        self.tags = Semaphore(env, f"{name}.{p.disk_controller}.tags", p.disk.queue_depth)
        self.on_vcpu = p.device_model_thread == "vcpu"
        self.costs = costs = ExitCosts(host, p.device_access_cycles,
                                       p.device_model_location == "kernel", host.tracer.enabled)
        injection = costs.injection(hp.irq_us)
        eoi = costs.eoi(level=p.nic_model in LEVEL_TRIGGERED)
        blk_eoi = costs.eoi(level=p.disk_controller in LEVEL_TRIGGERED)
        nic, disk = p.nic, p.disk
        self.nic_deliver = combine("nic interrupt", injection,
                                   costs.operation(f"{p.nic_model} irq entry", nic.irq_entry),
                                   eoi)
        self.nic_finish = costs.operation(f"{p.nic_model} irq exit", nic.irq_exit)
        self.nic_refill = costs.operation(f"{p.nic_model} rx refill", nic.rx_refill)
        #: Received frames the poll has not refilled yet (a refill every rx_refill_frames).
        self._rx_unrefilled = 0
        #: PIO data transfer (ide_transfer = "pio", S101): other issue and interrupt-entry
        #: accesses, and per block the data-port exits the handler makes.
        self.pio = p.ide_transfer == "pio"
        mode = " pio" if self.pio else ""
        self.blk_deliver = combine("disk interrupt", injection,
                                   costs.operation(f"{p.disk_controller}{mode} irq entry",
                                                   disk.pio_irq_entry if self.pio
                                                   else disk.irq_entry), blk_eoi)
        self.blk_finish = costs.operation(f"{p.disk_controller} irq exit", disk.irq_exit)
        self.blk_issue = costs.operation(f"{p.disk_controller}{mode} issue",
                                         disk.pio_issue if self.pio else disk.issue)
        self.pio_costs = PioCosts(host, p, costs) if self.pio else None
        # The devices' interrupt lines; a partial binds each device's delivery work.
        self.guest_nic = DeviceInterrupt(  # type: ignore[assignment]
            env, f"{name}.{p.nic_model}.irq",
            deliver=partial(self._deliver, work=self.nic_deliver, nic=True),
            handle_batch=self._poll_nic, finish=self._finish_nic, batch_limit=hp.napi_budget,
            min_interval_us=p.irq_min_interval_us, latch_causes=nic.irq_cause_latch,
            weight=self._rx_frames if nic.napi else None, tracer=host.tracer)
        self.guest_blk = DeviceInterrupt(  # type: ignore[assignment]
            env, f"{name}.{p.disk_controller}.irq",
            deliver=partial(self._deliver, work=self.blk_deliver, nic=False),
            handle_batch=self._poll_blk, finish=self._finish_blk, batch_limit=hp.napi_budget,
            # No minimum interval: the disk controllers have no interrupt coalescing (QEMU's
            # AHCI does not offer CCC, S73); irq_min_interval_us is the NIC's mitigation.
            min_interval_us=0.0, poll_until_empty=False, tracer=host.tracer)
        self.plans = Planner(host, p, costs, self.on_vcpu, self.blk_issue)
        #: The device model submits the disk's I/O from one thread: one hardware queue.
        (self.disk_queue,) = host.claim_disk_queues(1)

    def loops(self) -> list[DrainLoop]:
        """Consumers: host NIC, the devices' interrupt handlers and the VMM I/O thread."""
        return [*super().loops(), self.iothread]

    def ring_stats(self) -> dict[str, tuple[int, int]]:
        """The controller's command slots."""
        return {self.tags.name: (self.tags.capacity, self.tags.max_in_use)}

    def interrupt_guest(self, loop: Any, item: Any) -> bool:
        """Raise ``item``'s cause on a device line (interrupts are counted on delivery)."""
        return bool(loop.push(item))

    # Running planned work ---------------------------------------------------------------------
    def _start(self, ctx: ExecContext, req: Request, plan: Plan) -> ProcessGenerator:
        """Count ``plan``'s exits on ``req`` and return the CPU work to ``yield from``.

        Not a generator itself: delegating straight to :meth:`Cpu.run` keeps one generator
        frame fewer on every resume (the caller then charges ``plan.parts`` if critical).
        """
        if plan.exits is not None:
            plan.exits.count(req)
        return self.host.cpu.run(ctx, req, plan.steps)

    def _run_irq(self, req: Request, plan: Plan) -> ProcessGenerator:
        """Run interrupt work on a vCPU taken at interrupt priority (no phase accounting).

        A real vCPU takes an interrupt at the next instruction boundary, ahead of the
        process-context work waiting for it; the model's vCPUs are not preemptible, so the
        handler instead waits only for the work already running, never behind queued work.
        """
        wait = self.vcpu.acquire(priority=True)
        if wait is not None:
            yield wait
        if plan.exits is not None:
            plan.exits.count(req)
        yield from self.host.cpu.run(self.irq_ctx, req, plan.steps)
        self.vcpu.release()

    # Transmit ----------------------------------------------------------------------------------
    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Guest stack -> doorbell exits -> device model copies and sends -> wire, per burst."""
        env = self.env
        enter(req, env.now)
        bursts = self.plans.tx(nbytes)
        last = len(bursts) - 1
        arrive_us = env.now
        handed = None
        for index, (vcpu_plan, model_plan, size) in enumerate(bursts):
            yield from self._start(self.vcpu, req, vcpu_plan)
            charge(req, vcpu_plan.parts, env.now)
            if self.on_vcpu:
                arrive_us, raised = self._put_on_wire(req, size)
                if raised and index < last:
                    # The virtual interrupt is taken before the guest builds the next burst.
                    yield env.timeout(0.0)
            else:
                handed = env.event() if index == last else None
                self.iothread.push((TX, req, size, handed, model_plan))
        if handed is not None:
            arrive_us = yield handed
        start = env.now
        yield env.timeout(arrive_us - start)
        charge(req, ((DEVICE, arrive_us - start),), env.now)

    def _put_on_wire(self, req: Request, nbytes: int) -> tuple[float, bool]:
        """Hand frames to the NIC and raise transmit-done.

        Returns when the last byte reaches the peer, and whether an interrupt was raised.
        """
        host = self.host
        arrive_us: float = host.nic.tx.offer(self.env.now, host.nic.wire_bytes(nbytes))
        if host.tracer.enabled:
            host.trace("nic.tx", "wire", req.id, f"{nbytes} B on the wire, at peer "
                                                  f"{arrive_us:.3f} µs")
        return arrive_us, self.guest_nic.push((TX_DONE, req, nbytes, None))

    # Receive -----------------------------------------------------------------------------------
    def receive(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Host NIC -> bridge -> I/O thread -> interrupt -> guest stack -> application.

        ``nbytes == 0`` is a pure ACK: the guest's stack takes it; no application is woken.
        """
        env = self.env
        hp = self.host.params
        enter(req, env.now)
        done = env.event()
        self.host_nic.push((RX, req, nbytes, done))
        yield done
        if not nbytes:
            return
        app_us = hp.ctx_switch_us + hp.syscall_us + self.host.copy_us(nbytes)
        yield from self.host.cpu.run(self.vcpu, req, (
            (GUEST, hp.ctx_switch_us, "guest: wake application"),
            (GUEST, hp.syscall_us + self.host.copy_us(nbytes), "guest: recv syscall + copy")))
        charge(req, ((P_GUEST, app_us),), env.now)

    def _host_irq(self, item: Any) -> ProcessGenerator:
        irq_us = self.host.params.irq_us
        switch_us = self.host.world_switch_us
        if switch_us > 0.0 and self.vcpu.in_use:
            # Hosted: the monitor owns the CPU while the guest runs and must switch to the host
            # OS to let it take its interrupt.
            req = item[1]
            req.exits += 1
            yield from self.host.cpu.run(self.softirq, req, (
                (EXIT, switch_us, "hosted VMM: world switch to the host for its interrupt"),
                (HOST, irq_us, "host NIC interrupt")))
            charge(req, ((EXITS, switch_us), (HOST_KERNEL, irq_us)), self.env.now)
            return
        yield from self.host.cpu.run(self.softirq, item[1], (
            (HOST, irq_us, "host NIC interrupt"),))
        charge(item[1], ((HOST_KERNEL, irq_us),), self.env.now)

    def _world_switch_back(self, req: Request, critical: bool) -> ProcessGenerator:
        """Hosted: a world switch back into the monitor to raise a virtual interrupt.

        The device model completed an I/O in the host world (nothing when bare-metal).
        """
        switch_us = self.host.world_switch_us
        if switch_us > 0.0:
            req.exits += 1
            yield from self.host.cpu.run(self.iothread_ctx, req, (
                (EXIT, switch_us, "hosted VMM: world switch back to raise the interrupt"),))
            if critical:
                charge(req, ((EXITS, switch_us),), self.env.now)

    def _host_rx_batch(self, batch: list[Any]) -> ProcessGenerator:
        host = self.host
        for item in batch:
            us = host.segments(item[2], host.nic_params.tso_bytes) * host.params.bridge_pkt_us
            yield from host.cpu.run(self.softirq, item[1], (
                (HOST, us, "host: NIC rx + bridge + tap"),))
            charge(item[1], ((HOST_KERNEL, us),), self.env.now)
            self.forward_rx(item)

    def forward_rx(self, item: Any) -> None:
        """The tap wakes the VMM's I/O thread."""
        self.iothread.push(item)

    # The VMM's I/O thread ----------------------------------------------------------------------
    def _iothread_wake(self, item: Any) -> ProcessGenerator:
        us = self.host.params.ctx_switch_us
        yield from self.host.cpu.run(self.iothread_ctx, item[1], (
            (BACKEND, us, "wake VMM I/O thread"),))
        if item[0] != TX or item[3] is not None:  # an early burst's wake overlaps the vCPU
            charge(item[1], ((DEVICE_MODEL, us),), self.env.now)

    def _iothread_batch(self, batch: list[Any]) -> ProcessGenerator:
        ctx = self.iothread_ctx
        for item in batch:
            kind, req, nbytes = item[0], item[1], item[2]
            if kind == RX:
                plan = self.plans.rx(nbytes)
                yield from self._start(ctx, req, plan)
                charge(req, plan.parts, self.env.now)
                yield from self._world_switch_back(req, True)
                self.guest_nic.push(item)
            elif kind == BLK_DONE:
                copies = self.params.disk_dma_copies * self.host.copy_us(nbytes)
                host_us = 0.5 * self.host.params.blk_io_us
                yield from self.host.cpu.run(ctx, req, (
                    (HOST, host_us, "host: AIO completion"),
                    (BACKEND, copies, "device model: copy disk data")))
                charge(req, ((HOST_KERNEL, host_us), (COPIES, copies)), self.env.now)
                yield from self._world_switch_back(req, True)
                self.guest_blk.push(item)
            elif kind == TX:
                yield from self._start(ctx, req, item[4])
                yield from self._world_switch_back(req, False)  # its transmit-done interrupt
                arrive_us, _raised = self._put_on_wire(req, nbytes)
                if item[3] is not None:  # the last burst; earlier ones overlap the vCPU's work
                    charge(req, item[4].parts, self.env.now)
                    item[3].succeed(arrive_us)
            else:  # BLK: submit the command on the I/O thread
                yield from self._start(ctx, req, self.plans.block[1])
                charge(req, self.plans.block[1].parts, self.env.now)
                self.env.process(self._serve_block(item))

    # Interrupts --------------------------------------------------------------------------------
    def _deliver(self, pending: list[Any], held_from_us: float | None, *,
                 work: OperationCost, nic: bool) -> ProcessGenerator:
        """Deliver one interrupt for ``pending``; each critical item waited through it.

        Delivery wakes a halted vCPU first (wake latency, HLT exit, thread switch): part of
        the interrupt's latency, its HLT exit counted on the first item's request. An
        interrupt raised by a latched cause alone (``pending`` empty: the poll already handled
        its packet) is counted on the request whose cause raised it.
        """
        env = self.env
        line = self.guest_nic if nic else self.guest_blk
        first = (pending[0] if pending else line.last_cause)[1]
        first.interrupts += 1
        critical = [item[1] for item in pending if item[0] != TX_DONE]
        if held_from_us is not None:  # mitigation held the interrupt back: delivery latency
            for req in critical:
                held = env.now - max(held_from_us, req.phase_mark_us)
                charge(req, ((INTERRUPT, held),), env.now)
        delay_us = yield from self.wait_for_vcpu_thread()
        wake, wake_exits = self.vcpu_wake_steps()
        work.count(first)
        wait = self.vcpu.acquire(priority=True)
        if wait is not None:
            yield wait
        line.read_causes()  # the handler's first access reads the cause register (ICR)
        steps = work.steps
        parts = work.parts
        if wake:
            first.exits += wake_exits  # the HLT: an exit with no counted reason ("other")
            steps = (*((c, d, label) for c, d, label, _phase in wake), *steps)
        if wake or delay_us:
            parts = ((PH_VCPU_WAKEUP, delay_us + sum(step[1] for step in wake)), *parts)
        yield from self.host.cpu.run(self.irq_ctx, first, steps)
        self.vcpu.release()
        for req in critical:
            charge(req, parts, env.now)

    def _poll_nic(self, batch: list[Any]) -> ProcessGenerator:
        """One receive poll: the guest stack per frame, and buffer refills.

        A refill (e1000: an RDT write) every ``rx_refill_frames`` frames and one at the end of
        the poll for the rest (S17).
        """
        stack_pkt_us = self.host.params.stack_pkt_us
        refill = self.nic_refill
        every = self.params.nic.rx_refill_frames
        last_rx = None
        for kind, req, nbytes, done in batch:
            if kind == RX:  # transmit completions only free descriptors (not modelled)
                frames = self.host.nic.frames(nbytes)
                us = frames * stack_pkt_us
                refills, self._rx_unrefilled = divmod(self._rx_unrefilled + frames, every)
                steps: tuple[Any, ...] = ((GUEST, us, "guest: stack rx"),)
                parts: tuple[Any, ...] = ((P_GUEST, us),)
                if refills and refill.steps:
                    steps += refill.steps * refills
                    parts += refill.parts * refills
                    for _ in range(refills):
                        refill.count(req)
                wait = self.vcpu.acquire(priority=True)
                if wait is not None:
                    yield wait
                yield from self.host.cpu.run(self.irq_ctx, req, steps)
                self.vcpu.release()
                charge(req, parts, self.env.now)
                done.succeed()
                last_rx = req
        if last_rx is not None and self._rx_unrefilled:
            self._rx_unrefilled = 0
            if refill.steps:
                yield from self._run_irq(last_rx, Plan(refill.steps, (), refill))

    def _rx_frames(self, item: Any) -> int:
        """A NAPI poll's work for ``item``: its received frames (transmit completions: none)."""
        return self.host.nic.frames(item[2]) if item[0] == RX else 0

    def _finish_nic(self, handled: list[Any]) -> ProcessGenerator:
        work = self.nic_finish
        req = (handled[-1] if handled else self.guest_nic.last_cause)[1]
        yield from self._run_irq(req, Plan(work.steps, (), work))

    def _poll_blk(self, batch: list[Any]) -> ProcessGenerator:
        us = 0.5 * self.host.params.blk_io_us
        for item in batch:
            req, done = item[1], item[3]
            wait = self.vcpu.acquire(priority=True)
            if wait is not None:
                yield wait
            if len(item) > 4:  # a PIO block: the handler's data transfer and what follows
                steps, block_parts, finished = self._pio_handler(item)
                yield from self.host.cpu.run(self.irq_ctx, req, steps)
                charge(req, block_parts, self.env.now)
                if not finished:
                    self.vcpu.release()
                    done.succeed(False)
                    continue
            yield from self.host.cpu.run(self.irq_ctx, req, ((GUEST, us,
                                                             "guest: block completion"),))
            self.vcpu.release()
            charge(req, ((P_GUEST, us),), self.env.now)
            self.tags.release()
            done.succeed(True)

    def _finish_blk(self, handled: list[Any]) -> ProcessGenerator:
        work = self.blk_finish
        yield from self._run_irq(handled[-1][1], Plan(work.steps, (), work))

    # Block I/O ---------------------------------------------------------------------------------
    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """Command slot -> issue exits -> device model submits -> disk -> interrupt."""
        if self.pio:
            yield from self._block_io_pio(req, nbytes, write, sequential)
            return
        env = self.env
        enter(req, env.now)
        wait = self.tags.acquire()
        if wait is not None:
            yield wait
        yield from self._start(self.vcpu, req, self.plans.block[0])
        charge(req, self.plans.block[0].parts, env.now)
        done = env.event()
        item = (BLK, req, nbytes, done, write, sequential)
        if self.on_vcpu:
            yield from self._serve_block(item)
        else:
            self.iothread.push(item)
        yield done
        us = self.host.params.ctx_switch_us
        yield from self.host.cpu.run(self.vcpu, req, ((GUEST, us, "guest: wake application"),))
        charge(req, ((P_GUEST, us),), env.now)

    def _serve_block(self, item: Any) -> ProcessGenerator:
        _kind, req, nbytes, done, write, sequential = item
        start = self.env.now
        yield from self.host.disk.serve(req, nbytes, write, sequential, self.disk_queue)
        charge(req, ((DEVICE, self.env.now - start),), self.env.now)
        self.iothread.push((BLK_DONE, req, nbytes, done))

    # IDE PIO ----------------------------------------------------------------------------------
    def _pio_handler(self, item: Any) -> tuple[list[Any], list[Any], bool]:
        """What the interrupt handler of one PIO block does; True if the command is done.

        Read: it reads block ``index`` (its last element starts the next block's AIO), and
        after the last block ata_wait_idle reads STATUS. Write: it writes block ``index + 1``
        (whose last element starts that block's AIO); the last interrupt only completes.
        """
        pio = self.pio_costs
        assert pio is not None
        req, blocks, index, write = item[1], item[4], item[5], item[6]
        last = index == len(blocks) - 1
        steps: list[Any] = []
        block_parts: list[Any] = []
        data = (blocks[index + 1] if not last else 0) if write else blocks[index]
        if data:
            steps, block_parts = pio.transfer(req, data, write)
            if not last:
                more = pio.submit()
                steps += more[0]
                block_parts += more[1]
        if last and not write:
            more = pio.status(req)
            steps += more[0]
            block_parts += more[1]
        return steps, block_parts, last

    def _block_io_pio(self, req: Request, nbytes: int, write: bool, sequential: bool
                      ) -> ProcessGenerator:
        """IDE PIO (READ/WRITE MULTIPLE, S101): one interrupt per DRQ block.

        The issue's COMMAND write runs QEMU's ide_exec_cmd in the vCPU's exit (on the vCPU
        thread whatever ``device_model_thread`` says): a read starts its first block's AIO
        there; a write's first block goes out from the guest's PIO task after a STATUS poll,
        and its AIO starts at the block's last element. Each block's AIO completes on the I/O
        thread and raises the interrupt; the handler moves the data (:meth:`_pio_handler`).
        """
        env = self.env
        hp = self.host.params
        pio = self.pio_costs
        assert pio is not None
        enter(req, env.now)
        wait = self.tags.acquire()
        if wait is not None:
            yield wait
        blocks = pio.blocks(nbytes)
        guest_us = hp.syscall_us + 0.5 * hp.blk_io_us
        issue = self.blk_issue
        issue.count(req)
        steps: list[Any] = [(GUEST, guest_us, "guest: submit + block layer"), *issue.steps,
                            (BACKEND, self.plans.command_us,
                             "device model: ide_exec_cmd (READ/WRITE MULTIPLE)")]
        block_parts: list[Any] = [(P_GUEST, guest_us), *issue.parts,
                                  (DEVICE_MODEL, self.plans.command_us)]
        if write:  # ata_sff_pio_task: ata_sff_busy_wait, then the first block
            for more in (pio.status(req), pio.transfer(req, blocks[0], True)):
                steps += more[0]
                block_parts += more[1]
        more = pio.submit()
        steps += more[0]
        block_parts += more[1]
        yield from self.host.cpu.run(self.vcpu, req, tuple(s for s in steps if s[1] > 0.0))
        charge(req, tuple(pt for pt in block_parts if pt[1] > 0.0), env.now)
        for index, count in enumerate(blocks):
            start = env.now
            yield from self.host.disk.serve(req, count * SECTOR_BYTES, write, sequential,
                                            self.disk_queue)
            charge(req, ((DEVICE, env.now - start),), env.now)
            done = env.event()
            self.iothread.push((BLK_DONE, req, count * SECTOR_BYTES, done, blocks, index,
                                write))
            if (yield done):
                break
        us = hp.ctx_switch_us
        yield from self.host.cpu.run(self.vcpu, req, ((GUEST, us, "guest: wake application"),))
        charge(req, ((P_GUEST, us),), env.now)
