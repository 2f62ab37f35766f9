"""Workloads, modelled on the tools the literature measures with.

* :class:`RequestResponse`: netperf TCP_RR. A peer sends a request, the guest's server
  receives it, optionally works, and answers; ``in_flight`` transactions circulate (closed
  loop) or transactions arrive as a Poisson process (open loop).
* :class:`BulkStream`: ttcp / nuttcp. The guest transmits (or receives) a continuous stream.
  The stack hands the device segments of up to ``nic.tso_bytes`` (segmentation offload), so one
  simulated request is one such segment carrying several application writes, not one MTU frame.
* :class:`BlockIO`: fio. ``jobs`` x ``iodepth`` I/Os of ``block_bytes`` outstanding (closed) or
  Poisson arrivals (open), random or sequential, with a read fraction.
* :class:`~virtlab.servers.Server`, :class:`~virtlab.servers.KeyValueCache`,
  :class:`~virtlab.servers.WebServer`, :class:`~virtlab.servers.OltpDatabase`: application
  servers whose requests are made of server steps (:mod:`virtlab.servers`).
* :class:`CpuHog`: a busy loop (a noisy neighbour, or each container of a shares experiment):
  ``threads`` CPU-bound threads; each completed ``chunk_us`` of CPU counts as one request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtlab.errors import ConfigError
from virtlab.params import Params, param
from virtlab.servers import KeyValueCache, OltpDatabase, Server, WebServer

__all__ = ["RequestResponse", "BulkStream", "BlockIO", "CpuHog", "Server", "KeyValueCache",
           "WebServer", "OltpDatabase", "ServerWorkload", "Workload", "check_workload_names"]


def _loop_param() -> Any:
    """The ``loop`` field shared by every workload (declared once)."""
    return param("closed", choices=("closed", "open"),
                 source="assumption (netperf, fio: closed)",
                 doc="'closed': a fixed number outstanding; 'open': Poisson arrivals at "
                     "rate_per_s.")


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestResponse(Params):
    """A netperf TCP_RR-like request/response workload (the guest is the server)."""

    kind: str = param("rr", choices=("rr",), source="-", doc="Workload type tag.")
    name: str = param("rr", source="-", doc="Name of the workload within its guest.")
    request_bytes: int = param(100, unit="bytes", lo=1, hi=1 << 30, source="F14 (100 B)",
                               doc="Request payload.")
    response_bytes: int = param(200, unit="bytes", lo=1, hi=1 << 30, source="F14 (200 B)",
                                doc="Response payload.")
    in_flight: int = param(1, lo=1, hi=100000, source="F14 (1 transaction in flight)",
                           doc="Transactions outstanding in closed loop.")
    server_work_us: float = param(0.0, unit="µs", lo=0.0, hi=1e7, source="netperf (none)",
                                  doc="Application work per request in the guest.")
    loop: str = _loop_param()
    rate_per_s: float = param(10000.0, unit="1/s", lo=0.0, hi=1e9, lo_open=True,
                              source="assumption", doc="Arrival rate in open loop.")


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkStream(Params):
    """A ttcp/nuttcp-like bulk TCP stream."""

    kind: str = param("stream", choices=("stream",), source="-", doc="Workload type tag.")
    name: str = param("stream", source="-", doc="Name of the workload within its guest.")
    direction: str = param("transmit", choices=("transmit", "receive"),
                           source="F14, B03 (SUT transmits)",
                           doc="Whether the guest sends or receives the stream.")
    message_bytes: int = param(8192, unit="bytes", lo=1, hi=1 << 30,
                               source="ttcp default buffer (8 KiB)",
                               doc="Size of one application write.")
    window_bytes: int = param(262144, unit="bytes", lo=1, hi=1 << 34,
                              source="assumption (TCP window)", doc="Bytes in flight.")
    acks: bool = param(
        True, source="S65 (delayed ACK), S180 (a stack pass per ACK), S181 (GRO does not merge "
                     "pure ACKs)",
        doc="TCP as a conversation: the receiver sends pure ACKs through its path (as any "
            "transmit) and the sender takes them through its path (as any receive); false: "
            "a one-way stream without ACKs.")
    loop: str = _loop_param()
    rate_per_s: float = param(1000.0, unit="1/s", lo=0.0, hi=1e9, lo_open=True,
                              source="assumption", doc="Segments per second in open loop.")


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockIO(Params):
    """A fio-like block workload (libaio, direct I/O)."""

    kind: str = param("block", choices=("block",), source="-", doc="Workload type tag.")
    name: str = param("fio", source="-", doc="Name of the workload within its guest.")
    pattern: str = param("random", choices=("random", "sequential"), source="fio rw=",
                         doc="Access pattern.")
    read_fraction: float = param(1.0, lo=0.0, hi=1.0, source="fio rwmixread",
                                 doc="Probability that an I/O is a read.")
    block_bytes: int = param(4096, unit="bytes", lo=512, hi=1 << 30, source="fio bs (4 KiB)",
                             doc="Size of one I/O.")
    iodepth: int = param(32, lo=1, hi=65536, source="fio iodepth", doc="I/Os in flight per job.")
    jobs: int = param(1, lo=1, hi=4096, source="fio numjobs", doc="Parallel jobs.")
    loop: str = _loop_param()
    rate_per_s: float = param(10000.0, unit="1/s", lo=0.0, hi=1e9, lo_open=True,
                              source="assumption", doc="I/O arrival rate in open loop.")


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuHog(Params):
    """A CPU-bound busy loop: ``threads`` threads that always want a CPU.

    The work is handed to the scheduler as preemptible CPU time (it runs in the scheduler's
    quanta); each ``chunk_us`` of CPU a thread receives completes one request, so throughput
    times ``chunk_us`` is the CPU the hog got. With ``think_us`` > 0 a thread sleeps that long
    after each chunk (a partly busy guest).
    """

    kind: str = param("cpu", choices=("cpu",), source="-", doc="Workload type tag.")
    name: str = param("hog", source="-", doc="Name of the workload within its guest.")
    threads: int = param(1, lo=1, hi=4096,
                         source="VL26 (one busy loop per container)",
                         doc="CPU-bound threads; each holds one of the guest's CPUs while it "
                             "runs or waits for a core.")
    chunk_us: float = param(10_000.0, unit="µs", lo=1.0, hi=1e9, source="assumption",
                            doc="CPU time counted as one completed request.")
    think_us: float = param(0.0, unit="µs", lo=0.0, hi=1e9, source="assumption",
                            doc="Sleep after each chunk (0: always runnable).")
    loop: str = param("closed", choices=("closed",), source="-",
                      doc="Always 'closed': the threads loop.")


ServerWorkload = Server | KeyValueCache | WebServer | OltpDatabase
"""Application servers (:mod:`virtlab.servers`): requests made of server steps."""

Workload = (RequestResponse | BulkStream | BlockIO | CpuHog | Server | KeyValueCache | WebServer
            | OltpDatabase)
"""Any workload; :class:`virtlab.lifecycle.WorkloadRunner` drives one while the model runs."""


def check_workload_names(guest: str, workloads: tuple[Workload, ...]) -> None:
    """Workload names must be unique within a guest (they name random streams)."""
    seen: set[str] = set()
    for workload in workloads:
        if workload.name in seen:
            raise ConfigError("name", f"workload name {workload.name!r} is used twice in "
                                      f"guest {guest!r}; names must be unique")
        seen.add(workload.name)
