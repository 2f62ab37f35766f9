"""Lab ``queues``: a device as a single queue; predict utilisation and response time.

The problem draws an arrival rate and a mean service time from the seed; the answers come from
:mod:`virtlab.queueing` and are confirmed by simulating the same queue in virtlab.
"""

from __future__ import annotations

import numpy as np

from virtlab import BlockIO, GuestSpec, Scenario, queueing, run
from virtlab.hardware import DiskParams, HostParams
from virtlab.labs import Answer, Lab, register
from virtlab.stats import mean_ci

REPLICATIONS = 4


def _problem(seed: int) -> tuple[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    service_us = float(rng.choice([5.0, 8.0, 10.0, 20.0, 25.0]))
    rho = float(rng.choice([0.3, 0.5, 0.6, 0.7, 0.8, 0.9]))
    cv = float(rng.choice([0.0, 1.0]))
    rate_per_s = rho / service_us * 1e6
    kind = "deterministic (M/D/1)" if cv == 0.0 else "exponential (M/M/1)"
    text = (f"A flash device serves one request at a time. Requests arrive as a Poisson process\n"
            f"at {rate_per_s:,.0f} per second; service times are {kind} with mean "
            f"{service_us:g} µs.\n\n"
            "Questions:\n"
            "  rho = the device's utilisation\n"
            "  W   = the mean response time (waiting + service), in µs\n"
            "  L   = the mean number of requests at the device (Little's law)\n")
    return text, {"service_us": service_us, "rate_per_s": rate_per_s, "cv": cv}


def _answers(ctx: dict[str, float]) -> list[Answer]:
    lam = ctx["rate_per_s"] / 1e6
    if ctx["cv"] == 0.0:
        result = queueing.md1(lam, ctx["service_us"])
        how = "M/D/1: Wq = lam S^2 / (2 (1 - rho)), W = Wq + S"
    else:
        result = queueing.mm1(lam, 1.0 / ctx["service_us"])
        how = "M/M/1: W = 1 / (mu - lam)"
    return [Answer("rho", result["rho"], "", "rho = lam / mu"),
            Answer("W", result["W"], "µs", how),
            Answer("L", result["L"], "", "Little: L = lam W")]


def simulate(ctx: dict[str, float], seed: int = 0) -> tuple[float, float]:
    """Mean response time of the same queue simulated in virtlab: (mean, 95 % CI half-width)."""
    host = HostParams(syscall_us=0.0, ctx_switch_us=0.0, irq_us=0.0, blk_io_us=0.0)
    disk = DiskParams(channels=1, read_access_us=ctx["service_us"], service_cv=ctx["cv"],
                      interface_mbytes_per_s=1e6)
    scenario = Scenario(duration_us=2e5, warmup_us=2e4, host=host, disk=disk, guests=(
        GuestSpec(name="g", approach="native", workloads=(
            BlockIO(loop="open", rate_per_s=ctx["rate_per_s"], block_bytes=512),)),))
    means = [run(scenario, seed, replication=r).summaries[0].latency_mean_us
             for r in range(REPLICATIONS)]
    return mean_ci(means)


LAB = register(Lab("queues", "a device as a single queue", _problem, _answers))
