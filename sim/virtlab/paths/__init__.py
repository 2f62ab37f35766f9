"""I/O paths: how a guest's network and disk requests reach the hardware.

Every path implements :class:`IOPath`, so a scenario swaps the path without touching the
workload. The five paths:

* :class:`~virtlab.paths.native.NativePath`: the host kernel's stack and drivers (baseline);
* :class:`~virtlab.paths.container.ContainerPath`: the same kernel, plus a veth/bridge hop,
  optional NAT and cgroup accounting;
* :class:`~virtlab.paths.passthrough.PassthroughPath`: device assignment (an SR-IOV virtual
  function or a VFIO-assigned device): the guest kernel drives the hardware itself, and only
  the device's interrupts involve the hypervisor;
* :class:`~virtlab.paths.emulated.EmulatedPath`: trap-and-emulate devices (e1000-like NIC,
  AHCI/IDE-like disk): register accesses exit to a device model;
* :class:`~virtlab.paths.paravirtual.ParavirtualPath`: a frontend and a backend sharing bounded
  rings with suppressed notifications (virtio-style).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from simpy.events import ProcessGenerator

from virtlab.drain import DrainLoop
from virtlab.records import Request

__all__ = ["IOPath", "APPROACHES"]

#: Approach names accepted in scenarios and on the command line, in the order tables use.
APPROACHES = ("native", "container", "passthrough", "paravirtual", "emulated")


class IOPath(Protocol):
    """What a workload needs from an I/O path.

    Each method is a generator to be delegated to with ``yield from``; it returns when the
    operation is complete from the application's point of view.
    """

    approach: ClassVar[str]
    #: Category (virtlab.records) of the kernel work done for the application: the host
    #: kernel for native and containers, the guest kernel for virtual machines.
    kernel_category: ClassVar[int]

    def start(self) -> None:
        """Start the path's processes (after all components are wired)."""

    def receive(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Take ``nbytes`` that just arrived at the host NIC up to the application.

        ``nbytes == 0`` is a pure ACK: the kernel takes it, no application is woken.
        """

    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Send ``nbytes`` from the application; return when the last byte reaches the peer."""

    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """Read or write ``nbytes``; return when the application sees the completion."""

    def ring_stats(self) -> dict[str, tuple[int, int]]:
        """Bounded queues of the path: name -> (capacity, max occupancy), for invariants."""

    def loops(self) -> list[DrainLoop]:
        """The path's notified consumers (NAPI instances, backends, interrupt handlers)."""
