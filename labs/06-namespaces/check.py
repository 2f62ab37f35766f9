"""Check lab 06 (part 4): predict the CPU shares that cgroup weights and a quota give.

    python labs/06-namespaces/check.py --weights 900:100 --share-a 0.9
    python labs/06-namespaces/check.py --quota 5/10 --share-q 0.5
    sudo python labs/06-namespaces/check.py --weights 300:100 --measure   # also on this kernel

Two CPU-bound containers *a* and *b* with cgroup weights A:B share one CPU; a third, *q*, may use
Q ms in every P ms on a CPU of its own. The formula says a gets A/(A+B) and q gets Q/P. The check
prints the formula, the simulator's CFS (virtlab's container path on one core, a 0.5 s
window) and, with --measure on Linux as root with a cgroup cpu controller, what the real
kernel gave (``virtlab demo cgroups``, 3 s). Your predictions (--share-a, --share-q) are
right when within 0.02 of the formula. Exit status 0 when simulation agrees with the formula
(within 0.02) and your predictions are right; a --measure that cannot run says why and does
not fail the check. The generated form of this lab is ``virtlab lab namespaces -s SEED``.
"""

from __future__ import annotations

import argparse

from virtlab import run
from virtlab.config import scenario_from_dict
from virtlab.errors import PreflightError

TOLERANCE = 0.02      # absolute, in fractions of a CPU
PERIOD_US = 100_000.0


def _pair(text: str, sep: str) -> tuple[float, float]:
    try:
        left, right = (float(x) for x in text.split(sep))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected A{sep}B with two numbers, got {text!r}") from None
    if left <= 0 or right <= 0:
        raise argparse.ArgumentTypeError(f"both numbers must be positive, got {text!r}")
    return left, right


def simulated_shares(weight_a: float, weight_b: float, quota_ms: float,
                     period_ms: float) -> tuple[float, float]:
    """Share of *a* (of a, b's CPU) and of *q* (of its own CPU) under virtlab's CFS."""
    busy = [{"kind": "cpu", "name": "busy"}]
    data = {
        "name": "lab06", "duration_us": 600_000.0, "warmup_us": 100_000.0,
        "host": {"cores": 1}, "scheduler": {"host": "cfs", "cgroup": "v2"},
        "guests": [
            {"name": "a", "approach": "container", "sched": {"weight": round(weight_a)},
             "workloads": busy},
            {"name": "b", "approach": "container", "sched": {"weight": round(weight_b)},
             "workloads": busy}]}
    pair = run(scenario_from_dict(data), 0).summaries
    total = sum(s.guest_cpu_pct for s in pair)
    share_a = pair[0].guest_cpu_pct / total
    quota = {**data, "guests": [{
        "name": "q", "approach": "container",
        "sched": {"cfs_quota_us": quota_ms * 1000.0, "cfs_period_us": period_ms * 1000.0},
        "workloads": busy}]}
    (q,) = run(scenario_from_dict(quota), 0).summaries
    return share_a, q.guest_cpu_pct / 100.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=lambda t: _pair(t, ":"), default=(300.0, 100.0),
                        help="weights A:B of a and b (default 300:100)")
    parser.add_argument("--quota", type=lambda t: _pair(t, "/"), default=(20.0, 100.0),
                        help="quota Q/P in ms for q (default 20/100)")
    parser.add_argument("--share-a", type=float, help="your prediction: a's share, 0..1")
    parser.add_argument("--share-q", type=float, help="your prediction: q's share, 0..1")
    parser.add_argument("--measure", action="store_true",
                        help="also measure on this kernel (Linux, root, cgroup cpu controller)")
    args = parser.parse_args()
    (wa, wb), (quota_ms, period_ms) = args.weights, args.quota
    formula_a, formula_q = wa / (wa + wb), min(1.0, quota_ms / period_ms)
    sim_a, sim_q = simulated_shares(wa, wb, quota_ms, period_ms)
    print(f"{'':<22} {'a (of a+b)':>11} {'q (of its CPU)':>15}")
    print(f"{'formula':<22} {formula_a:>11.3f} {formula_q:>15.3f}")
    print(f"{'simulated (CFS, 0.5 s)':<22} {sim_a:>11.3f} {sim_q:>15.3f}")
    status = 0
    if abs(sim_a - formula_a) > TOLERANCE or abs(sim_q - formula_q) > TOLERANCE:
        print("simulation and formula DISAGREE")
        status = 1
    if args.measure:
        try:
            from virtlab.linux import cgroups, demo_cgroups, preflight

            preflight.require_root("measuring cgroup shares")
            cgroups.detect()
            real = demo_cgroups.run_demo(weights=(round(wa), round(wb)), quota_ms=quota_ms,
                                         period_ms=period_ms, out=lambda _line: None)
            print(f"{'measured (this kernel)':<22} {real.share_a:>11.3f} {real.share_q:>15.3f}"
                  f"   (q throttled in {real.nr_throttled} of {real.nr_periods} periods)")
        except PreflightError as err:
            print(f"not measured: {err}")
    for name, given, want in (("share_a", args.share_a, formula_a),
                              ("share_q", args.share_q, formula_q)):
        if given is None:
            continue
        right = abs(given - want) <= TOLERANCE
        print(f"your {name} = {given:g}: {'right' if right else 'wrong'} "
              f"(within {TOLERANCE:g})")
        status |= 0 if right else 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
