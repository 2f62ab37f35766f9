"""The container path: the host's own kernel, plus what namespaces and cgroups add.

A container has no second kernel: its syscalls enter the host kernel directly. What differs
from native (S45, S38):

* a bridged network namespace is joined by a veth pair: each packet takes one extra
  ``netif_rx`` and softirq pass (``veth_hop_us``) before the bridge (S45);
* optional NAT adds connection tracking and address rewriting per packet (``nat_us``);
* the cgroup charges CPU and I/O to the container (``cgroup_charge_us`` per request);
* syscalls inside namespaces cost about the same as on the host (``syscall_extra_us``; measured
  141.5 vs 141.1 ns, VL26).

``virtlab calibrate`` measures ``syscall_extra_us`` and ``veth_hop_us`` on a real machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from virtlab.cpu import ExecContext
from virtlab.host import Host
from virtlab.params import Params, param
from virtlab.paths.native import NativePath

__all__ = ["ContainerPath", "ContainerParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerParams(Params):
    """What namespaces and cgroups add to the native path."""

    section = "container"

    network: str = param("bridge", source="assumption (Docker's default network mode)",
                         choices=("bridge", "host"),
                         doc="'bridge': a veth pair into a bridge; 'host': the host's stack.")
    nat: bool = param(False, source="F14 (NAT doubles TCP_RR latency; off to match their "
                                    "no-NAT runs)", doc="Masquerade/port-map the traffic.")
    veth_hop_us: float = param(
        0.5, unit="µs", lo=0.0, hi=1000.0,
        source="assumption (S45 mechanism; veth/lo bulk ratio 0.77, VL26)",
        doc="Extra host-kernel cost per packet per direction for the veth hop.")
    nat_us: float = param(2.0, unit="µs", source="assumption", lo=0.0, hi=1000.0,
                          doc="Connection tracking and NAT per packet per direction.")
    cgroup_charge_us: float = param(0.1, unit="µs", source="assumption", lo=0.0, hi=1000.0,
                                    doc="cgroup CPU/IO accounting per request.")
    syscall_extra_us: float = param(
        0.0004, unit="µs", lo=0.0, hi=100.0,
        source="VL26 (141.5 vs 141.1 ns getpid)",
        doc="Extra cost of a syscall made inside the namespaces.")


class ContainerPath(NativePath):
    """Native I/O plus the veth hop, NAT and cgroup charges of a container."""

    approach: ClassVar[str] = "container"

    def __init__(self, host: Host, name: str, app: ExecContext,
                 params: ContainerParams | None = None) -> None:
        self.params = params if params is not None else ContainerParams()
        super().__init__(host, name, app, self.params)

    def extra_syscall_us(self) -> float:
        """Syscalls inside namespaces cost ``syscall_extra_us`` more."""
        return self.params.syscall_extra_us

    def extra_packet_us(self) -> float:
        """The veth hop (bridged network) and NAT, per packet per direction."""
        extra = self.params.veth_hop_us if self.params.network == "bridge" else 0.0
        if self.params.nat:
            extra += self.params.nat_us
        return extra

    def extra_request_us(self) -> float:
        """Cgroup accounting, per request."""
        return self.params.cgroup_charge_us
