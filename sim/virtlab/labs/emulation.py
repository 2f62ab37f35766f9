"""Lab ``emulation``: the exits and latency of one isolated request on an emulated device.

The problem draws a device (an e1000 or pcnet32 NIC with a TCP_RR transaction, an IDE or AHCI
controller with a 4 KiB read) and a CPU support preset from the seed. The answers come from
running one request through virtlab's emulated path (what ``virtlab trace`` shows); the
lab's check script (``labs/03-emulation/check.py``) prints the same request as a bill computed
from the parameters and the device's access table.
"""

from __future__ import annotations

import numpy as np

from virtlab import run
from virtlab.config import Scenario, scenario_from_dict
from virtlab.labs import Answer, Lab, register

DEVICES = ("e1000", "pcnet32", "ahci", "ide")
PRESETS = ("binary-translation", "vtx-first-gen", "vtx-core2", "modern", "modern-apicv")
NICS = ("e1000", "pcnet32")


def scenario(ctx: dict[str, str]) -> Scenario:
    """One emulated guest (2 vCPUs) with the drawn device and preset, deterministic disk."""
    device = ctx["device"]
    emulated = {"nic_model": device} if device in NICS else {"disk_controller": device}
    workload = ({"kind": "rr", "request_bytes": 100, "response_bytes": 200} if device in NICS
                else {"kind": "block", "block_bytes": 4096, "iodepth": 1})
    return scenario_from_dict({
        "hypervisor": {"cpu_support": ctx["preset"]}, "emulated": emulated,
        "disk": {"kind": "flash", "service_cv": 0.0},
        "guests": [{"name": "vm", "approach": "emulated", "vcpus": 2,
                    "workloads": [workload]}]})


def _problem(seed: int) -> tuple[str, dict[str, str]]:
    rng = np.random.default_rng(seed)
    ctx = {"device": str(rng.choice(DEVICES)), "preset": str(rng.choice(PRESETS))}
    what = ("one TCP_RR transaction (100-byte request, 200-byte response)"
            if ctx["device"] in NICS else "one 4 KiB read at queue depth 1")
    text = (f"A guest with two vCPUs sees an emulated {ctx['device']} and runs {what},\n"
            f"alone, on a host whose CPU support is '{ctx['preset']}' (virtlab presets).\n"
            f"Read the device's access table (virtlab devices {ctx['device']}) and the preset's\n"
            "costs, or trace the request (virtlab trace --approach emulated ...).\n\n"
            "Questions:\n"
            "  exits      = VM exits the request causes\n"
            "  user_exits = those that go out to the user-space device model\n"
            "  latency_us = the request's latency, in µs\n")
    return text, ctx


def _answers(ctx: dict[str, str]) -> list[Answer]:
    (record,) = run(scenario(ctx), 0, max_requests=1, records=True).records
    return [Answer("exits", float(record.exits), "", "counted by the model (virtlab trace)"),
            Answer("user_exits", float(record.exits_user), "", "exits the device model saw"),
            Answer("latency_us", record.latency_us, "µs",
                   "sum of the request's steps (labs/03-emulation/check.py prints them)")]


LAB = register(Lab("emulation", "exits and latency of one emulated request", _problem,
                   _answers, tolerance=0.01))
