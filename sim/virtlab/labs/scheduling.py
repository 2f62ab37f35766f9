"""Lab ``scheduling``: predict the CPU shares that weights and a quota give two containers.

The problem draws cgroup weights for two CPU-bound containers on one core and a CFS quota for
one of them from the seed. The answers are the shares virtlab's CFS gives them over a 2 s
window (``virtlab run`` with the same scenario); the formula (weights in proportion, a quota
as a cap, the capped container's leftover going to the other) predicts them within a percent.
"""

from __future__ import annotations

import numpy as np

from virtlab import run
from virtlab.config import Scenario, scenario_from_dict
from virtlab.labs import Answer, Lab, register


def scenario(ctx: dict[str, float]) -> Scenario:
    """Two busy containers on one core under CFS (cgroup v2 weights, a quota on b)."""
    busy = [{"kind": "cpu", "name": "busy"}]
    sched_b: dict[str, float] = {"weight": int(ctx["weight_b"])}
    if ctx["quota_pct"] > 0:
        sched_b["cfs_quota_us"] = ctx["quota_pct"] * 1000.0   # of a 100 ms period
    return scenario_from_dict({
        "duration_us": 2_500_000.0, "warmup_us": 500_000.0, "host": {"cores": 1},
        "scheduler": {"host": "cfs", "cgroup": "v2"},
        "guests": [{"name": "a", "approach": "container", "sched": {"weight": int(ctx["weight_a"])},
                    "workloads": busy},
                   {"name": "b", "approach": "container", "sched": sched_b,
                    "workloads": busy}]})


def _problem(seed: int) -> tuple[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    ctx = {"weight_a": float(rng.choice([100, 200, 300, 500, 900])),
           "weight_b": float(rng.choice([100, 200, 300])),
           "quota_pct": float(rng.choice([0, 10, 20, 30, 50]))}
    quota = (f"Container b may use at most {ctx['quota_pct']:g} ms in every 100 ms period "
             "(cpu.max)." if ctx["quota_pct"] else "Neither container has a quota.")
    text = ("Two containers, a and b, each run a CPU-bound loop on the same single core under\n"
            f"CFS. Their cgroup weights are a = {ctx['weight_a']:g} and b = "
            f"{ctx['weight_b']:g}.\n{quota}\n\n"
            "Questions (fractions of the core, 0..1):\n"
            "  share_a = the share of the core a gets\n"
            "  share_b = the share of the core b gets\n")
    return text, ctx


def _answers(ctx: dict[str, float]) -> list[Answer]:
    a, b = (s.guest_cpu_pct / 100.0 for s in run(scenario(ctx), 0).summaries)
    how = "virtlab's CFS over 2 s (weights in proportion; a quota caps b, a takes the rest)"
    return [Answer("share_a", a, "", how), Answer("share_b", b, "", how)]


LAB = register(Lab("scheduling", "CPU shares of two containers: weights and a quota", _problem,
                   _answers, tolerance=0.03))
