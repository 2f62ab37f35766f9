"""Small studies that generate tables of the documentation from the model itself.

They sit above the model (they build scenarios and run them), so that the mechanism modules
they describe stay free of imports from the layers above them; the tests check that each
page still shows what its study computes.
"""

from __future__ import annotations

from virtlab.config import GuestSpec, Scenario
from virtlab.cpusupport import PRESET_NAMES
from virtlab.hardware import HypervisorParams
from virtlab.model import run
from virtlab.servers import (
    CpuWork,
    PageFaults,
    Receive,
    Send,
    Server,
    ServerStep,
    Syscalls,
    TlbMisses,
)

__all__ = ["EVENT_HEAVY", "event_heavy_markdown"]


# A study for the docs ------------------------------------------------------------------------
#: Event-heavy requests of the docs' table: 5 µs of user work plus one kind of event.
EVENT_HEAVY: dict[str, tuple[ServerStep, ...]] = {
    "20 page faults": (Receive(bytes=100), CpuWork(us=5.0), PageFaults(count=20.0),
                       Send(bytes=100)),
    "50 system calls": (Receive(bytes=100), CpuWork(us=5.0), Syscalls(count=50.0),
                        Send(bytes=100)),
    "200 TLB misses": (Receive(bytes=100), CpuWork(us=5.0), TlbMisses(count=200.0),
                       Send(bytes=100)),
}


def event_heavy_markdown(seed: int = 0) -> str:
    """Mean latency relative to native of event-heavy servers on each preset (docs/servers.md).

    8 connections share one thread, so the thread binds and the latency is 8 times the
    thread's per-request CPU time; the guest is paravirtual with 4 vCPUs.
    """
    lines = ["| per request | native | " + " | ".join(PRESET_NAMES) + " |",
             "|---|---|" + "---|" * len(PRESET_NAMES)]
    for title, steps in EVENT_HEAVY.items():
        server = Server(connections=8, threads=1, steps=steps)
        cells = []
        for approach, preset in [("native", "modern")] + [("paravirtual", p)
                                                          for p in PRESET_NAMES]:
            scenario = Scenario(duration_us=20_000.0, warmup_us=2_000.0,
                                hypervisor=HypervisorParams(cpu_support=preset),
                                guests=(GuestSpec(name="g", approach=approach, vcpus=4,
                                                  workloads=(server,)),))
            cells.append(run(scenario, seed).summaries[0].latency_mean_us)
        lines.append(f"| {title} | " + " | ".join(f"{c / cells[0]:.2f}" for c in cells) + " |")
    return "\n".join(lines)
