"""The native path: the application and the host kernel's own stack and drivers.

Request flow (network receive): NIC interrupt (if the host's NAPI instance is asleep) ->
softirq TCP/IP per segment -> the application, blocked in ``recv``, is woken -> ``recv`` copies
the data. Send: ``send`` syscall + copy + TCP/IP -> NIC link -> peer; the NIC's transmit
completion is reaped by the same NAPI instance. Block I/O: syscall + block layer (blk-mq: the
submitting CPU's hardware queue) -> device -> completion interrupt -> block-layer completion ->
the application is woken. The flow is :class:`~virtlab.paths.kernelstack.KernelStack`'s (device
assignment runs the same one in the guest); this module adds the host's interrupts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext
from virtlab.host import Host
from virtlab.params import Params
from virtlab.paths.kernelstack import KernelStack, StackIO, StackLabels
from virtlab.records import HOST

__all__ = ["NativePath", "NativeParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NativeParams(Params):
    """The native path has no costs of its own: it uses the host's (``[host]``)."""

    section = "native"


class NativePath(StackIO):
    """Host kernel I/O for an application running directly on the host.

    Components: ``app`` (the application's CPUs, given by the guest spec), ``stack`` (the host
    kernel's stack and block layer), with its NAPI instance for the NIC queue (``nic_napi``, in
    the ``softirq`` context) and one for disk completions (``blk_napi``). Per-packet extra
    costs are hooks so that :class:`~virtlab.paths.container.ContainerPath` adds its hop
    without copying this flow.
    """

    approach: ClassVar[str] = "native"
    #: Category of the application's kernel work (host kernel here, guest kernel in a VM).
    kernel_category: ClassVar[int] = HOST
    #: What the host kernel's steps are called.
    labels: ClassVar[StackLabels] = StackLabels(
        wake="wake application", recv="recv syscall + copy", send="send syscall + copy",
        stack_tx="host stack tx", stack_rx="host stack rx", submit="submit I/O",
        blk_done="block completion")

    def __init__(self, host: Host, name: str, app: ExecContext, params: Params | None = None
                 ) -> None:
        self.host = host
        self.env = host.env
        self.name = name
        self.app = app
        hp = host.params
        self.softirq = ExecContext(host.env, f"{name}.softirq", 1)
        # Receive queue 0's interrupt and NAPI poll run in ``softirq`` (with the disk's); each
        # further queue (RSS) has a softirq context of its own, on a CPU of its own.
        extra_queues = [ExecContext(host.env, f"{name}.softirq{q}", 1)
                        for q in range(1, host.nic_params.queues)]
        self.stack = KernelStack(
            host, app, self.softirq, HOST, self.labels, nic_scope=f"{name}.nic",
            blk_scope=f"{name}.blk", on_nic_irq=self._nic_irq_in(self.softirq),
            on_blk_irq=self._blk_irq, syscall_us=hp.syscall_us + self.extra_syscall_us(),
            pkt_extra_us=self.extra_packet_us(), req_extra_us=self.extra_request_us(),
            blk_irq_free=hp.irq_us == 0.0,
            nic_queues=[(softirq, self._nic_irq_in(softirq)) for softirq in extra_queues])
        self.nic_napi = self.stack.nic
        self.blk_napi = self.stack.blk
        self._nic_irq_steps = ((HOST, hp.irq_us, "host NIC interrupt"),)
        self._blk_irq_steps = ((HOST, hp.irq_us, "host disk interrupt"),)

    # Hooks for the container path -----------------------------------------------------------
    def extra_syscall_us(self) -> float:
        """Extra cost of each syscall (none natively)."""
        return 0.0

    def extra_packet_us(self) -> float:
        """Extra host-kernel cost per packet in each direction (none natively)."""
        return 0.0

    def extra_request_us(self) -> float:
        """Extra host-kernel cost per request, e.g. cgroup accounting (none natively)."""
        return 0.0

    # Host interrupts ---------------------------------------------------------------------------
    def _nic_irq_in(self, softirq: ExecContext) -> Callable[[Any], ProcessGenerator]:
        """The host NIC interrupt handler of the receive queue whose poll runs in ``softirq``."""
        def irq(item: Any) -> ProcessGenerator:
            return self.host.cpu.run(softirq, item[1], self._nic_irq_steps)

        return irq

    # Returns what the NAPI loop delegates to (``yield from``): the CPU work's generator, or an
    # empty tuple when the interrupt costs nothing (the zero-cost reductions), so that no
    # generator is started for nothing.
    def _blk_irq(self, item: Any) -> ProcessGenerator | tuple[()]:
        if self._blk_irq_steps[0][1] > 0.0:
            return self.host.cpu.run(self.softirq, item[1], self._blk_irq_steps)
        return ()
