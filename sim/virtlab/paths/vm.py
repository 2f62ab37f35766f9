"""What the emulated and paravirtual paths share: a guest kernel behind a host bridge.

In both, a received packet first crosses the *host's* NIC queue and bridge (host-kernel work),
then reaches the guest through the path's device (an emulated NIC or a virtqueue), and the
guest's own kernel runs its TCP/IP stack on a vCPU. The guest handles device interrupts in a
NAPI-style :class:`~virtlab.drain.DrainLoop`: one virtual interrupt wakes it, and completions
that arrive while it polls are taken in the same poll without another interrupt.
"""

from __future__ import annotations

from typing import Any, ClassVar

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext
from virtlab.drain import DrainLoop
from virtlab.host import RX, Host
from virtlab.records import GUEST, HOST, Request

__all__ = ["VmPath"]


class VmPath:
    """Base of the virtual-machine paths.

    Components: ``vcpu`` (the guest's vCPUs, shared with the guest's applications), the host
    NIC queue ``host_nic`` (softirq + bridge, forwarding into the path's device via
    :meth:`forward_rx`), and the guest's interrupt handlers ``guest_nic`` and ``guest_blk``.
    Subclasses define the device: :meth:`send`, :meth:`block_io`, :meth:`forward_rx`, and the
    cost of taking an interrupt (:meth:`_guest_irq`).
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

    def start(self) -> None:
        """Start every consumer process."""
        for loop in self.loops():
            loop.start()

    def loops(self) -> list[DrainLoop]:
        """All consumer processes of the path (subclasses extend)."""
        return [self.host_nic, self.guest_nic, self.guest_blk]

    # Receive: identical up to the device ------------------------------------------------------
    def receive(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Host NIC -> bridge -> device -> guest interrupt -> guest stack -> application."""
        host = self.host
        hp = host.params
        done = self.env.event()
        self.host_nic.push((RX, req, nbytes, done))
        yield done
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
