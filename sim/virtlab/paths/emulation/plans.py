"""Plans: the work of each operation of the emulated path, computed once per size.

A plan is what one operation costs the CPU (steps for :meth:`virtlab.cpu.Cpu.run`), which
parts of it lie on the request's critical path (latency phases), and which exits it takes.
Requests of a workload have a few sizes only, so plans are cached by size; the path then
charges a ready block per operation instead of recomputing costs per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtlab.cpu import Step
from virtlab.host import Host
from virtlab.paths.emulation.exits import ExitCosts, OperationCost
from virtlab.paths.emulation.phases import (
    COPIES,
    DEVICE_MODEL,
    HOST_KERNEL,
    Part,
)
from virtlab.paths.emulation.phases import GUEST as P_GUEST
from virtlab.paths.emulation.settings import EmulatedParams
from virtlab.records import BACKEND, GUEST, HOST
from virtlab.units import cycles_to_us

__all__ = ["Plan", "Planner", "parts"]


@dataclass(frozen=True, slots=True)
class Plan:
    """Precomputed work of one operation of a given size: steps, latency parts, exits."""

    steps: tuple[Step, ...]
    parts: tuple[Part, ...]
    exits: OperationCost | None = None
    frames: int = 0


def parts(*pairs: Part) -> tuple[Part, ...]:
    """The non-zero ``(phase, µs)`` pairs."""
    return tuple(p for p in pairs if p[1] > 0.0)


class Planner:
    """Builds and caches the plans of one emulated guest.

    Parameters
    ----------
    host:
        The host (per-operation kernel costs, copy bandwidth, the NIC's framing).
    params:
        The ``[emulated]`` table.
    costs:
        Exit pricing for this run.
    on_vcpu:
        The device model processes transmits and submissions on the vCPU thread.
    issue:
        The disk controller's issue operation (already priced).

    """

    def __init__(self, host: Host, params: EmulatedParams, costs: ExitCosts, on_vcpu: bool,
                 issue: OperationCost) -> None:
        self.host = host
        self.params = params
        self.costs = costs
        self.on_vcpu = on_vcpu
        self.blk_issue = issue
        self.segment_bytes = (host.nic_params.tso_bytes if params.nic.tso
                              else host.nic_params.payload_per_frame_bytes)
        ghz = host.params.cpu_ghz
        self.tx_frame_us = cycles_to_us(params.tx_frame_cycles, ghz)
        self.rx_frame_us = cycles_to_us(params.rx_frame_cycles, ghz)
        self.command_us = cycles_to_us(params.disk_command_cycles, ghz)
        self._tx: dict[int, tuple[tuple[Plan, Plan, int], ...]] = {}
        self._rx: dict[int, Plan] = {}
        self.block = self._block()

    def tx(self, nbytes: int) -> tuple[tuple[Plan, Plan, int], ...]:
        """Per doorbell burst of a send of ``nbytes``: (vCPU work, device-model work, bytes)."""
        plans = self._tx.get(nbytes)
        if plans is None:
            plans = self._tx[nbytes] = self._tx_plans(nbytes)
        return plans

    def rx(self, nbytes: int) -> Plan:
        """Device-model work on the I/O thread for receiving ``nbytes``."""
        plan = self._rx.get(nbytes)
        if plan is None:
            plan = self._rx[nbytes] = self._rx_plan(nbytes)
        return plan

    def _tx_plans(self, nbytes: int) -> tuple[tuple[Plan, Plan, int], ...]:
        """Per doorbell burst: (work on the vCPU, work of the device model, payload bytes).

        The guest builds ``tx_doorbell_batch`` packets and rings the doorbell once; the device
        model then copies them out, segments them into wire frames, writes each frame to the
        tap and raises transmit-done. A send of several bursts repeats this, so the
        transmit-done interrupt of one burst can arrive before the next burst is built.
        """
        host, hp, p = self.host, self.host.params, self.params
        packets = host.segments(nbytes, self.segment_bytes)
        per_burst = p.tx_doorbell_batch
        doorbell = self.costs.operation(f"{p.nic_model} tx doorbell", p.nic.tx_doorbell)
        kick_us = 0.0 if self.on_vcpu else hp.syscall_us
        bursts = []
        left = nbytes
        for first in range(0, packets, per_burst):
            count = min(per_burst, packets - first)
            size = min(left, count * self.segment_bytes)
            left -= size
            frames = host.nic.frames(size)
            guest_us = count * hp.stack_pkt_us
            if first == 0 and nbytes:  # nbytes 0: a pure ACK, sent by the kernel itself
                guest_us += hp.syscall_us + host.copy_us(nbytes)
            dma_us = p.dma_copies * host.copy_us(size)
            tap_us = p.tap_copies * host.copy_us(size)
            host_us = frames * (hp.syscall_us + hp.bridge_pkt_us)
            model_us = frames * self.tx_frame_us
            guest: tuple[Step, ...] = ((GUEST, guest_us, f"guest: stack tx, {count} packet(s)"
                                        + (" (+ send syscall and copy)" if first == 0 and nbytes
                                           else " (pure ACK)" if not nbytes else "")),)
            model: tuple[Step, ...] = tuple(s for s in (
                (BACKEND, model_us, f"device model: transmit {frames} frame(s)"),
                (BACKEND, dma_us, "device model: copy payload out of guest memory"),
                (HOST, tap_us, "host: tap write copies into an skb"),
                (HOST, host_us, f"host: {frames} tap write(s) + bridge")) if s[1] > 0.0)
            model_parts = parts((DEVICE_MODEL, model_us), (COPIES, dma_us + tap_us),
                                 (HOST_KERNEL, host_us))
            head = parts((P_GUEST, guest_us), *doorbell.parts, (DEVICE_MODEL, kick_us))
            if self.on_vcpu:
                bursts.append((Plan(guest + doorbell.steps + model, head + model_parts,
                                     doorbell, frames), Plan((), ()), size))
            else:
                kick: tuple[Step, ...] = ((BACKEND, kick_us, "device model: kick I/O thread"),)
                bursts.append((Plan(guest + doorbell.steps + kick, head, doorbell, frames),
                               Plan(model, model_parts, None, frames), size))
        return tuple(bursts)

    def _rx_plan(self, nbytes: int) -> Plan:
        """Device-model work on the I/O thread for receiving ``nbytes``."""
        host, hp, p = self.host, self.host.params, self.params
        frames = host.nic.frames(nbytes)
        copies = host.copy_us(nbytes)
        steps: tuple[Step, ...] = (
            (HOST, frames * hp.syscall_us + p.tap_copies * copies,
             f"host: {frames} tap read(s) copy out of skbs"),
            (BACKEND, frames * self.rx_frame_us, f"device model: receive {frames} frame(s)"),
            (BACKEND, p.dma_copies * copies, "device model: copy into guest buffers"))
        critical = parts((HOST_KERNEL, frames * hp.syscall_us),
                         (COPIES, (p.tap_copies + p.dma_copies) * copies),
                         (DEVICE_MODEL, frames * self.rx_frame_us))
        return Plan(tuple(s for s in steps if s[1] > 0.0), critical, None, frames)

    def _block(self) -> tuple[Plan, Plan]:
        """(submission on the vCPU, submission on the I/O thread) of one disk command."""
        hp = self.host.params
        issue = self.blk_issue
        guest_us = hp.syscall_us + 0.5 * hp.blk_io_us
        host_us = hp.syscall_us + 0.5 * hp.blk_io_us
        guest: tuple[Step, ...] = ((GUEST, guest_us, "guest: submit + block layer"),)
        model: tuple[Step, ...] = (
            (BACKEND, self.command_us, "device model: decode command, submit AIO"),
            (HOST, host_us, "host: AIO submit"))
        model_parts = parts((DEVICE_MODEL, self.command_us), (HOST_KERNEL, host_us))
        if self.on_vcpu:
            return (Plan(guest + issue.steps + model,
                          parts((P_GUEST, guest_us), *issue.parts) + model_parts, issue),
                    Plan((), ()))
        kick = (BACKEND, hp.syscall_us, "device model: kick the I/O thread")
        return (Plan((*guest, *issue.steps, kick),
                      parts((P_GUEST, guest_us), *issue.parts, (DEVICE_MODEL, hp.syscall_us)),
                      issue),
                Plan(model, model_parts))
