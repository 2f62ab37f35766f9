"""The host: cores, NIC, disk and the hypervisor's costs, shared by every guest's I/O path."""

from __future__ import annotations

import math

import simpy
from simpy.events import ProcessGenerator

from virtlab.cpu import Cpu
from virtlab.devices import Disk, Nic
from virtlab.drain import DrainLoop
from virtlab.hardware import DiskParams, HostParams, HypervisorParams, NicParams
from virtlab.records import Request
from virtlab.rng import Streams
from virtlab.trace import NullTracer, Tracer
from virtlab.units import bytes_per_us_from_gbytes_per_s, cycles_to_us

__all__ = ["Host", "RX", "TX", "TX_DONE", "BLK", "BLK_DONE"]

# Kinds of items that flow through queues and rings: (kind, request, nbytes, event).
RX, TX, TX_DONE, BLK, BLK_DONE = "rx", "tx", "tx-done", "blk", "blk-done"


class Host:
    """Physical resources and derived per-operation costs (µs), computed once per run.

    Parameters
    ----------
    env:
        The SimPy environment.
    host, nic, disk, hypervisor:
        Parameter sets of the scenario.
    streams:
        The run's random streams (the disk draws from ``"host.disk.service"``).
    tracer:
        Tracer shared by all components.

    """

    def __init__(self, env: simpy.Environment, host: HostParams, nic: NicParams,
                 disk: DiskParams, hypervisor: HypervisorParams, streams: Streams,
                 tracer: Tracer | None = None) -> None:
        self.env = env
        self.params = host
        self.nic_params = nic
        self.hypervisor = hypervisor
        self.tracer: Tracer = tracer if tracer is not None else NullTracer()
        self.cpu = Cpu(env, host.cores, self.tracer)
        self.nic = Nic(nic)
        self.disk = Disk(env, disk, streams.get("host.disk.service"), self.tracer)
        self._copy_bytes_per_us = bytes_per_us_from_gbytes_per_s(host.memcpy_gbytes_per_s)
        ghz = host.cpu_ghz
        self.exit_kernel_us = cycles_to_us(hypervisor.exit_kernel_cycles, ghz)
        self.exit_user_us = self.exit_kernel_us * hypervisor.user_exit_factor
        self.hypercall_us = cycles_to_us(hypervisor.hypercall_cycles, ghz)
        posted = hypervisor.posted_interrupts
        self.irq_inject_us = 0.0 if posted else cycles_to_us(hypervisor.irq_inject_cycles, ghz)
        #: EOI exits of a level-triggered interrupt (PCI INTx through the IOAPIC).
        self.eoi_exits = 1 if (hypervisor.eoi_exit and not posted) else 0
        #: EOI exits of an MSI or edge-triggered interrupt: none with PV EOI (S74).
        self.msi_eoi_exits = 0 if hypervisor.pv_eoi else self.eoi_exits
        #: A hosted VMM's world switch to the host and back: what reaching the user-level
        #: device model costs beyond a trap the monitor handles itself (SU01: 7.45 - 1.36 µs).
        self.world_switch_us = (self.exit_user_us - self.exit_kernel_us
                                if hypervisor.kind == "hosted" else 0.0)
        self._next_disk_queue = 0

    def claim_disk_queues(self, count: int) -> list[int]:
        """Hardware queues of the disk for a submitter running on ``count`` CPUs.

        blk-mq maps each CPU to one hardware queue (``blk_mq_map_queues``); submitters are
        assumed to run on distinct CPUs, so each claim takes the next ``count`` queues in turn
        (wrapping around: more CPUs than queues share them).
        """
        queues = self.disk.params.queues
        first = self._next_disk_queue
        self._next_disk_queue = (first + count) % queues
        return [(first + i) % queues for i in range(min(count, queues))]

    def copy_us(self, nbytes: int) -> float:
        """Time to copy ``nbytes`` once at memory-copy bandwidth."""
        return nbytes / self._copy_bytes_per_us

    def segments(self, nbytes: int, segment_bytes: int) -> int:
        """Packets the stack builds for ``nbytes`` with segments of at most ``segment_bytes``."""
        return max(1, math.ceil(nbytes / segment_bytes))

    def trace(self, scope: str, kind: str, request_id: int, detail: str) -> None:
        """Emit a trace event at the current time (call only when ``tracer.enabled``)."""
        self.tracer.emit(self.env.now, scope, kind, request_id, detail)

    def transmit(self, req: Request, nbytes: int, completions: DrainLoop | None
                 ) -> ProcessGenerator:
        """Put ``nbytes`` on the NIC's transmit link; return when they reach the peer.

        When serialization ends, the device reports a transmit completion to ``completions``
        (the NAPI instance or guest interrupt handler that reaps it), which interrupts the
        kernel that owns the request if that consumer sleeps.
        """
        env = self.env
        nic = self.nic
        arrive_us = nic.tx.offer(env.now, nic.wire_bytes(nbytes))
        if self.tracer.enabled:
            self.trace("nic.tx", "wire", req.id, f"{nbytes} B on the wire, at peer "
                                                  f"{arrive_us:.3f} µs")
        # free_at_us is when serialization of these bytes ends (>= now by construction).
        yield env.timeout(nic.tx.free_at_us - env.now)
        if completions is not None and completions.push((TX_DONE, req, nbytes, None)):
            req.interrupts += 1
        yield env.timeout(arrive_us - env.now)
