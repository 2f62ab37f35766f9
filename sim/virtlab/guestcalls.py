"""The guest's own system calls on the I/O path, with their virtualization surcharge.

Every I/O path prices the ``recv``, ``send`` and block ``read``/``write`` system calls it makes
for the application at their *native* cost (``host.syscall_us`` in the kernel of the approach).
What virtualization adds to a system call is a compute-side cost of the CPU support
(:mod:`virtlab.compute`: under binary translation the call enters and leaves through two VMM
callouts; under hardware VT-x and on Xen PV guests nothing). :class:`SyscallSurcharge` adds it
to each of those calls, so a server step's ``Syscalls`` and the path's own calls pay the same
surcharge, each exactly once:

* ``receive``: after the path brings the data up (the ``recv`` returns through the VMM);
* ``send`` with data, and ``block_io``: before the path takes over (the call enters the kernel
  first). A pure ACK (``send`` of 0 bytes) is the kernel's own and makes no system call.

The surcharge is CPU time of category ``exit`` on the application's context and the
``virt_compute`` latency phase on paths that split latency into phases; its callouts are not
counted as exits (:func:`virtlab.compute.compute_costs`: no hardware exit happens).

Invariant: with a zero surcharge (native, containers, hardware VT-x)
:meth:`SyscallSurcharge.wrap` returns the path itself, untouched.
"""

from __future__ import annotations

from typing import Any

from simpy.events import ProcessGenerator

from virtlab.compute import SYSCALL, ComputeCosts
from virtlab.cpu import Cpu, ExecContext
from virtlab.paths.emulation.phases import charge
from virtlab.records import EXIT, PHASES, Request

__all__ = ["SyscallSurcharge", "SurchargedPath"]

_PH_VIRT = PHASES.index("virt_compute")


class SyscallSurcharge:
    """The per-call surcharge of one guest's system calls (zero outside binary translation)."""

    __slots__ = ("cpu", "app", "us", "why")

    def __init__(self, cpu: Cpu, app: ExecContext, costs: ComputeCosts) -> None:
        self.cpu = cpu
        self.app = app
        self.us = costs.extra_us[SYSCALL]
        self.why = costs.why[SYSCALL] or costs.paging

    def wrap(self, path: Any) -> Any:
        """``path`` itself if the surcharge is zero, else a :class:`SurchargedPath` around it."""
        return path if self.us <= 0.0 else SurchargedPath(path, self)

    def pay(self, req: Request, calls: int | float, name: str = "syscall"
            ) -> ProcessGenerator:
        """Run the surcharge of ``calls`` system calls (``name``) for ``req`` (none if zero)."""
        us = calls * self.us
        if us <= 0.0:
            return
        yield from self.cpu.run(self.app, req, ((EXIT, us, f"virt: {name} ({self.why})"),))
        charge(req, ((_PH_VIRT, us),), self.cpu.env.now)


class SurchargedPath:
    """An I/O path whose application system calls pay :class:`SyscallSurcharge` (see module).

    Everything but ``receive``, ``send`` and ``block_io`` is the wrapped path's own.
    """

    def __init__(self, path: Any, surcharge: SyscallSurcharge) -> None:
        self._path = path
        self._surcharge = surcharge

    def __getattr__(self, name: str) -> Any:
        return getattr(self._path, name)

    def receive(self, req: Request, nbytes: int) -> ProcessGenerator:
        """The path's receive, then the ``recv`` call's surcharge."""
        yield from self._path.receive(req, nbytes)
        yield from self._surcharge.pay(req, 1, "recv")

    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """The ``send`` call's surcharge (none for a pure ACK), then the path's send."""
        if nbytes:
            yield from self._surcharge.pay(req, 1, "send")
        yield from self._path.send(req, nbytes)

    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """The ``read``/``write`` call's surcharge, then the path's block I/O."""
        yield from self._surcharge.pay(req, 1, "write" if write else "read")
        yield from self._path.block_io(req, nbytes, write, sequential)
