"""What the emulated and paravirtual paths share: a guest kernel behind a host bridge.

In both, a received packet first crosses the *host's* NIC queue and bridge (host-kernel work),
then reaches the guest through the path's device (an emulated NIC or a virtqueue), and the
guest's own kernel runs its TCP/IP stack on a vCPU. The guest handles device interrupts in a
NAPI-style :class:`~virtlab.drain.DrainLoop`: one virtual interrupt wakes it, and completions
that arrive while it polls are taken in the same poll without another interrupt.

Both also share what happens when an interrupt finds the guest idle (S30b, S44): the
vCPU had exited on HLT; KVM polls for ``halt_poll_us`` (S44) and then lets the vCPU thread
sleep, so a later interrupt must wake that thread (a host context switch) and wait for it to
run (``vcpu_wake_latency_us``). This belongs to the hypervisor, not to the device, so
:class:`VmPath` prices it for every device (:meth:`VmPath.vcpu_wake_steps`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext
from virtlab.drain import DrainLoop
from virtlab.host import RX, Host
from virtlab.records import EXIT, GUEST, HOST, PHASES, Request

__all__ = ["VmPath", "PhasedStep", "PH_VCPU_WAKEUP"]

#: One step of CPU work with the latency phase it belongs to:
#: (category, duration in µs, label, phase index).
PhasedStep = tuple[int, float, str, int]

#: Latency phase of waking a halted vCPU: part of the interrupt's delivery (or a ``wakeup``
#: phase, should :data:`virtlab.records.PHASES` gain one).
PH_VCPU_WAKEUP = PHASES.index("wakeup" if "wakeup" in PHASES else "interrupt")


class VmPath:
    """Base of the virtual-machine paths.

    Components: ``vcpu`` (the guest's vCPUs, shared with the guest's applications), the host
    NIC queue ``host_nic`` (softirq + bridge, forwarding into the path's device via
    :meth:`forward_rx`), and the guest's interrupt handlers ``guest_nic`` and ``guest_blk``.
    Subclasses define the device: :meth:`send`, :meth:`block_io`, :meth:`forward_rx`, and the
    cost of taking an interrupt (:meth:`_guest_irq`).

    The guest's vCPUs are *running* while any holds work, *halted* otherwise. A halted vCPU
    is *polling* for ``halt_poll_us`` after the last work ended (``vcpu.idle_since_us``), then
    *asleep*. Every device interrupt delivered to the guest first runs
    :meth:`wait_for_vcpu_thread`, then :meth:`vcpu_wake_steps` (steps to run on the vCPU ahead
    of the handler): nothing while running; the HLT exit while polling; while asleep, the HLT
    exit, the host's context switch to the vCPU thread and a delay of
    ``vcpu_wake_latency_us``. A vCPU whose work ended at this very instant never reached HLT
    (the interrupt was raised during its own exit, e.g. a transmit-done from the doorbell
    write), so it counts as running.
    """

    approach: ClassVar[str] = "vm"
    kernel_category: ClassVar[int] = GUEST

    def __init__(self, host: Host, name: str, vcpu: ExecContext) -> None:
        self.host = host
        self.env = host.env
        self.name = name
        self.vcpu = vcpu
        budget = host.params.napi_budget
        self.softirq = ExecContext(host.env, f"{name}.host-softirq", 1)
        self.host_nic = DrainLoop(host.env, f"{name}.host-nic", self._host_rx_batch,
                                  batch_limit=budget, on_wake=self._host_irq, tracer=host.tracer)
        self.guest_nic = DrainLoop(host.env, f"{name}.guest-nic", self._guest_nic_batch,
                                   batch_limit=budget, on_wake=self._guest_irq, tracer=host.tracer)
        self.guest_blk = DrainLoop(host.env, f"{name}.guest-blk", self._guest_blk_batch,
                                   batch_limit=budget, on_wake=self._guest_irq, tracer=host.tracer)
        #: Interrupts that found every vCPU halted.
        self.vcpu_wakeups = 0

    def start(self) -> None:
        """Start every consumer process."""
        for loop in self.loops():
            loop.start()

    def loops(self) -> list[DrainLoop]:
        """All consumer processes of the path (subclasses extend)."""
        return [self.host_nic, self.guest_nic, self.guest_blk]

    # Receive: identical up to the device ------------------------------------------------------
    def receive(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Host NIC -> bridge -> device -> guest interrupt -> guest stack -> application.

        ``nbytes == 0`` is a pure ACK: the guest's stack takes it; no application is woken.
        """
        host = self.host
        hp = host.params
        done = self.env.event()
        self.host_nic.push((RX, req, nbytes, done))
        yield done
        if not nbytes:
            return
        yield from host.cpu.run(self.vcpu, req, (
            (GUEST, hp.ctx_switch_us, "guest: wake application"),
            (GUEST, hp.syscall_us + host.copy_us(nbytes), "guest: recv syscall + copy"),
        ))

    def _host_irq(self, item: Any) -> ProcessGenerator:
        yield from self.host.cpu.run(self.softirq, item[1], (
            (HOST, self.host.params.irq_us, "host NIC interrupt"),))

    def _host_rx_batch(self, batch: list[Any]) -> ProcessGenerator:
        host = self.host
        for item in batch:
            nbytes = item[2]
            segments = host.segments(nbytes, host.nic_params.tso_bytes)
            yield from host.cpu.run(self.softirq, item[1], (
                (HOST, segments * host.params.bridge_pkt_us, "host: NIC rx + bridge + tap"),))
            self.forward_rx(item)

    def interrupt_guest(self, loop: DrainLoop, item: Any) -> bool:
        """Post a completion to the guest; return True if that raised a virtual interrupt."""
        if loop.push(item):
            item[1].interrupts += 1
            return True
        return False

    # Halted vCPUs ----------------------------------------------------------------------------
    def vcpu_idle_us(self) -> float | None:
        """How long every vCPU has been halted, or None if one runs (or ran until now)."""
        vcpu = self.vcpu
        if vcpu.in_use:
            return None
        idle_us = self.env.now - vcpu.idle_since_us
        return idle_us if idle_us > 0.0 else None

    def vcpu_wake_delay_us(self) -> float:
        """Delay, not CPU time, before an interrupt raised now reaches a sleeping vCPU thread."""
        idle_us = self.vcpu_idle_us()
        return 0.0 if idle_us is None else self._halted_vcpu_delay_us(idle_us)

    def wait_for_vcpu_thread(self) -> ProcessGenerator:
        """Wait out :meth:`vcpu_wake_delay_us` (call before :meth:`vcpu_wake_steps`).

        Returns the time waited in µs (part of the interrupt's delivery).
        """
        delay_us = self.vcpu_wake_delay_us()
        if delay_us > 0.0:
            if self.host.tracer.enabled:
                self.host.trace(self.vcpu.name, "wake-latency", -1,
                                f"the sleeping vCPU thread's core wakes up: {delay_us:.3f} µs")
            yield self.env.timeout(delay_us)
        return delay_us

    def vcpu_wake_steps(self) -> tuple[list[PhasedStep], int]:
        """Steps and VM exits of delivering an interrupt to a guest whose vCPUs are halted.

        ``([], 0)`` if a vCPU runs; the steps run on the vCPU ahead of the handler. Each call
        that finds the vCPUs halted counts one wake-up.
        """
        idle_us = self.vcpu_idle_us()
        if idle_us is None:
            return [], 0
        self.vcpu_wakeups += 1
        return self._halted_vcpu_steps(idle_us)

    def _halted_vcpu_delay_us(self, idle_us: float) -> float:
        """KVM: the woken thread's wake latency, once halt polling has given up (Xen: none)."""
        hv = self.host.hypervisor
        if hv.vmm == "xen-hvm":
            return 0.0
        return hv.vcpu_wake_latency_us if idle_us > hv.halt_poll_us else 0.0

    def _halted_vcpu_steps(self, idle_us: float) -> tuple[list[PhasedStep], int]:
        """KVM: the HLT exit; past the halt-polling window, a switch to the vCPU thread too.

        Xen HVM: the HLT exit blocks the vCPU; Xen schedules it back (no halt polling).
        """
        host = self.host
        steps: list[PhasedStep] = [(EXIT, host.exit_kernel_us, "HLT exit of the idle vCPU",
                                    PH_VCPU_WAKEUP)]
        if host.hypervisor.vmm == "xen-hvm":
            steps.append((EXIT, host.hypervisor.xen_domain_switch_us,
                          "xen: schedule the blocked vCPU", PH_VCPU_WAKEUP))
            return steps, 1
        if idle_us > host.hypervisor.halt_poll_us:
            steps.append((HOST, host.params.ctx_switch_us, "host: wake the halted vCPU thread",
                          PH_VCPU_WAKEUP))
        return steps, 1

    # Device specifics ------------------------------------------------------------------------
    def forward_rx(self, item: Any) -> None:
        """Hand a received packet from the host bridge to the device (subclass)."""
        raise NotImplementedError

    def _guest_irq(self, item: Any) -> ProcessGenerator:
        """Cost of one virtual interrupt in the guest (subclass)."""
        raise NotImplementedError

    def _guest_nic_batch(self, batch: list[Any]) -> ProcessGenerator:
        raise NotImplementedError

    def _guest_blk_batch(self, batch: list[Any]) -> ProcessGenerator:
        raise NotImplementedError
