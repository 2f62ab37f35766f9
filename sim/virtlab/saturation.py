"""Which resource limits a server: its threads, vCPUs, kernel loops, cores, disk or NIC.

:func:`find_bottleneck` runs a scenario once and reports, for each server workload
(:mod:`virtlab.servers`), its throughput, the busy fraction of every resource its requests use
and the one that binds. Busy fractions are exact where the model keeps busy time (the
application threads' CPU time, the host's cores, the disk, the NIC links); the vCPUs' is
sampled every ``sample_us`` (the engine keeps no busy time per context, and a sampler costs
events, so ordinary runs do without it).

The verdict: among the resources busy at least :data:`SATURATED` of the time, the busiest;
near-ties (within :data:`TIE`) go to the first in the order threads, disk, disk interface,
NIC, vCPUs, the path's kernel loops (a NAPI instance: one receive queue's softirq work runs
on one CPU at a time; a backend thread or an interrupt handler), host cores. So a
single-threaded server on one vCPU is bound by its thread (more vCPUs would not help), and an
interrupt handler that waits for busy vCPUs does not hide them. A kernel loop's busy fraction
is sampled too (running, or woken and waiting to run). None saturated: ``"clients"``
(too few connections, or an open-loop rate below capacity).
"""

from __future__ import annotations

from dataclasses import dataclass

import simpy
from simpy.events import ProcessGenerator

from virtlab.config import Scenario
from virtlab.cpu import Semaphore
from virtlab.drain import DrainLoop
from virtlab.model import build
from virtlab.rng import Streams

__all__ = ["SATURATED", "ORDER", "Verdict", "find_bottleneck", "binding"]

#: A resource busy at least this fraction of the time binds the server.
SATURATED = 0.85
#: Order of precedence among saturated resources.
ORDER = ("threads", "disk", "disk interface", "nic.tx", "nic.rx", "vcpus", "kernel loops",
         "host cores")
#: Busy fractions this close to the highest count as a tie, broken by ORDER.
TIE = 0.02


@dataclass(frozen=True)
class Verdict:
    """One server workload's throughput, resource busy fractions and binding resource."""

    scope: str
    approach: str
    throughput_per_s: float
    utilisation: dict[str, float]
    binding: str


def binding(utilisation: dict[str, float]) -> str:
    """The binding resource among ``utilisation`` (see the module docstring)."""
    def rank(name: str) -> int:
        key = "kernel loops" if name.startswith("kernel loop ") else name
        return ORDER.index(key) if key in ORDER else len(ORDER)

    saturated = [(u, name) for name, u in utilisation.items() if u >= SATURATED]
    if not saturated:
        return "clients"
    top = max(u for u, _ in saturated)
    return min((name for u, name in saturated if u >= top - TIE), key=rank)


def _sample_busy(env: simpy.Environment, sem: Semaphore, loops: list[DrainLoop],
                 every_us: float, acc: list[float]) -> ProcessGenerator:
    """Add the vCPUs in use and each loop's busy flag to ``acc`` every ``every_us``."""
    while True:
        acc[0] += sem.in_use
        for index, loop in enumerate(loops, start=1):
            acc[index] += not loop.asleep
        acc[-1] += 1
        yield env.timeout(every_us)


def find_bottleneck(scenario: Scenario, seed: int = 0, *, sample_us: float = 1.0
                    ) -> list[Verdict]:
    """Run ``scenario`` once and judge every server workload's binding resource.

    Busy fractions are taken over the measurement window ``[warmup_us, duration_us]``.
    """
    env = simpy.Environment()
    model = build(env, scenario, Streams(seed, 0))
    model.start()
    loops = {g.spec.name: list(g.path.loops()) for g in model.guests}
    samples = {name: [0.0] * (len(found) + 2) for name, found in loops.items()}
    start_us, end_us = scenario.warmup_us, scenario.duration_us
    env.run(until=start_us)
    host = model.host
    for guest in model.guests:
        name = guest.spec.name
        env.process(_sample_busy(env, guest.vcpu, loops[name], sample_us, samples[name]))
    marks = {
        "host cores": sum(host.cpu.busy_us), "disk": host.disk.busy_us,
        "disk interface": host.disk.interface.busy_us, "nic.tx": host.nic.tx.busy_us,
        "nic.rx": host.nic.rx.busy_us,
    }
    thread_marks = {r.scope: getattr(r, "thread_cpu_us", 0.0) for r in model.runners}
    env.run(until=end_us)
    span = end_us - start_us
    shared = {
        "host cores": (sum(host.cpu.busy_us) - marks["host cores"]) / (host.params.cores * span),
        "disk": (host.disk.busy_us - marks["disk"]) / (host.disk.channels.capacity * span),
        "disk interface": (host.disk.interface.busy_us - marks["disk interface"]) / span,
        "nic.tx": (host.nic.tx.busy_us - marks["nic.tx"]) / span,
        "nic.rx": (host.nic.rx.busy_us - marks["nic.rx"]) / span,
    }
    verdicts = []
    for guest in model.guests:
        acc = samples[guest.spec.name]
        count = max(acc[-1], 1.0)
        vcpus = acc[0] / (count * guest.vcpu.capacity)
        consumers = {f"kernel loop {loop.scope}": acc[i] / count
                     for i, loop in enumerate(loops[guest.spec.name], start=1)}
        for runner in guest.runners:
            if not hasattr(runner, "threads"):
                continue
            util = dict(shared)
            util["vcpus"] = vcpus
            util.update(consumers)
            util["threads"] = ((runner.thread_cpu_us - thread_marks[runner.scope])
                               / (runner.threads.capacity * span))
            summary = runner.tally.summary(guest=guest.spec.name,
                                           workload=runner.workload.name,
                                           approach=guest.spec.approach,
                                           kind=runner.workload.kind,
                                           cores=scenario.host.cores)
            verdicts.append(Verdict(runner.scope, guest.spec.approach,
                                    summary.throughput_per_s, util, binding(util)))
    return verdicts
