"""Lab ``exits``: count the VM exits of one request on an emulated NIC and what they cost.

The problem draws a CPU (clock, exit cost, user-space factor) and a device-model cost from the
seed. The answers come from running one request through virtlab's emulated path with those
parameters — the same model the student can trace with ``virtlab trace``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from virtlab import GuestSpec, RequestResponse, Scenario, run
from virtlab.hardware import HypervisorParams
from virtlab.labs import Answer, Lab, register
from virtlab.records import RequestRecord


def _problem(seed: int) -> tuple[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    ctx = {
        "cpu_ghz": float(rng.choice([2.0, 2.4, 3.0])),
        "exit_kernel_cycles": float(rng.choice([937.0, 1050.0, 2000.0, 2409.0])),
        "user_exit_factor": float(rng.choice([2.0, 3.3])),
        "eoi_exit": bool(rng.integers(0, 2)),
    }
    text = (f"A guest with an emulated e1000-like NIC answers one TCP_RR request (one packet in,\n"
            f"one packet out). The CPU runs at {ctx['cpu_ghz']:g} GHz; an exit handled in the\n"
            f"hypervisor kernel costs {ctx['exit_kernel_cycles']:g} cycles and one handled by "
            f"the user-space\ndevice model {ctx['user_exit_factor']:g} times as much. The "
            f"guest's EOI write {'traps' if ctx['eoi_exit'] else 'does not trap (PV-EOI)'}.\n"
            "The driver writes TDT once per transmitted burst, touches 5 registers per\n"
            "interrupt and writes RDT once per receive poll; the request takes one receive\n"
            "interrupt and one transmit-completion interrupt. The guest is idle when the\n"
            "request arrives, so its vCPU has exited on HLT (one more exit, handled in the\n"
            "hypervisor kernel) and the receive interrupt must wake it.\n\n"
            "Questions:\n"
            "  exits   = VM exits caused by this request\n"
            "  exit_us = CPU time spent in those exits and in interrupt injection, in µs\n")
    return text, ctx


def scenario(ctx: dict[str, float]) -> Scenario:
    """The scenario of a problem: one emulated guest, one TCP_RR workload, the drawn CPU."""
    hypervisor = HypervisorParams(exit_kernel_cycles=ctx["exit_kernel_cycles"],
                                  user_exit_factor=ctx["user_exit_factor"],
                                  eoi_exit=bool(ctx["eoi_exit"]))
    base = Scenario()
    return dataclasses.replace(
        base, hypervisor=hypervisor,
        host=dataclasses.replace(base.host, cpu_ghz=ctx["cpu_ghz"]),
        guests=(GuestSpec(name="vm", approach="emulated", workloads=(RequestResponse(),)),))


def one_request(ctx: dict[str, float]) -> RequestRecord:
    """The record of the problem's one request, as ``virtlab trace`` would show it."""
    (record,) = run(scenario(ctx), 0, max_requests=1, records=True).records
    return record


def _answers(ctx: dict[str, float]) -> list[Answer]:
    record = one_request(ctx)
    return [Answer("exits", float(record.exits), "", "counted by the model; see virtlab trace"),
            Answer("exit_us", record.cpu_exit_us, "µs",
                   "sum of exit and injection steps in virtlab trace")]


LAB = register(Lab("exits", "VM exits of one emulated request", _problem, _answers,
                   tolerance=0.01))
