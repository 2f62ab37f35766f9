"""Check lab 03: is an emulated request's latency the sum of its steps, and its exits the table?

    python labs/03-emulation/check.py                                  # e1000, first-gen VT-x
    python labs/03-emulation/check.py --device ide --cpu-support modern-apicv
    python labs/03-emulation/check.py --exits 16 --latency 50.4        # check your answers
    python labs/03-emulation/check.py --claims                         # the seed's claim (~30 s)

Without --claims: prints the bill of one isolated request, computed from the parameters and the
device's access table (virtlab.paths.emulation.analytic), next to the same request simulated;
with --exits/--latency, also checks your answers (exit status 0 if right). With --claims:
measures emulated/native throughput for small and bulk I/O under two CPU support presets.
"""

from __future__ import annotations

import argparse

from virtlab import run
from virtlab.config import scenario_from_dict
from virtlab.cpusupport import PRESET_NAMES
from virtlab.paths.emulation.analytic import disk_read_bill, transaction_bill
from virtlab.paths.emulation.claims import format_ratios, measure_ratios

NICS = ("e1000", "pcnet32")
DISKS = ("ahci", "ide")
TOLERANCE = 0.01          # relative tolerance for --latency
CLAIM_PRESETS = ("vtx-first-gen", "modern-apicv")


def _scenario(device: str, preset: str, profile: str):
    emulated = {"nic_model": device} if device in NICS else {"disk_controller": device}
    workload = ({"kind": "rr", "request_bytes": 100, "response_bytes": 200} if device in NICS
                else {"kind": "block", "block_bytes": 4096, "iodepth": 1})
    return scenario_from_dict({
        "hypervisor": {"cpu_support": preset}, "emulated": emulated,
        "disk": {"kind": "flash", "service_cv": 0.0},
        "guests": [{"name": "vm", "approach": "emulated", "vcpus": 2,
                    "workloads": [workload]}]}, profile)


def _bill(args: argparse.Namespace) -> int:
    scenario = _scenario(args.device, args.cpu_support, args.profile)
    bill = (transaction_bill(scenario) if args.device in NICS
            else disk_read_bill(scenario))
    (record,) = run(scenario, 0, max_requests=1, records=True).records
    print(f"One isolated request: device {args.device}, CPU support {args.cpu_support}, "
          f"profile {args.profile}\n")
    print(f"{'phase':<13} {'µs':>9}  step")
    for line in bill.lines:
        print(f"{line.phase:<13} {line.us:>9.3f}  {line.what}")
    print(f"{'total':<13} {bill.latency_us:>9.3f}  (the bill)")
    print(f"{'simulated':<13} {record.latency_us:>9.3f}  (virtlab trace shows the same request)")
    exits = sum(bill.exits.values())
    reasons = ", ".join(f"{k} {v}" for k, v in bill.exits.items() if v)
    print(f"\nexits: {exits} from the access table ({reasons}; {bill.user_exits} to user "
          f"space); simulated: {record.exits}")
    agree = abs(bill.latency_us - record.latency_us) < 1e-6 and exits == record.exits
    print("bill and simulation agree" if agree else "bill and simulation DISAGREE")
    status = 0 if agree else 1
    if args.exits is not None:
        right = args.exits == record.exits
        print(f"your exits = {args.exits}: {'right' if right else 'wrong'}")
        status |= 0 if right else 1
    if args.latency is not None:
        right = abs(args.latency - record.latency_us) <= TOLERANCE * record.latency_us
        print(f"your latency = {args.latency:g} µs: {'right' if right else 'wrong'} "
              f"(within {TOLERANCE:.0%})")
        status |= 0 if right else 1
    return status


def _claims(args: argparse.Namespace) -> int:
    rows = measure_ratios(CLAIM_PRESETS, profile=args.profile, replications=3)
    print(format_ratios(rows))
    small = [r for r in rows if r.preset == CLAIM_PRESETS[0] and r.workload.startswith("small")]
    bulk = [r for r in rows if r.preset == CLAIM_PRESETS[0] and r.workload.startswith("bulk")]
    half = all(r.ratio <= 0.6 for r in small)
    bulk_less = all(b.ratio > s.ratio for b in bulk for s in small)
    modern_less = all(m.ratio > f.ratio for m in rows if m.preset == CLAIM_PRESETS[1]
                      for f in rows if f.preset == CLAIM_PRESETS[0] and f.workload == m.workload)
    print(f"\nsmall requests lose about half or more with {CLAIM_PRESETS[0]}: {half}")
    print(f"bulk transfers lose less: {bulk_less}")
    print(f"{CLAIM_PRESETS[1]} loses less: {modern_less}")
    return 0 if half and bulk_less and modern_less else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=NICS + DISKS, default="e1000")
    parser.add_argument("--cpu-support", choices=PRESET_NAMES, default="vtx-first-gen")
    parser.add_argument("--profile", default="modern")
    parser.add_argument("--exits", type=int, help="your answer: exits of the request")
    parser.add_argument("--latency", type=float, help="your answer: its latency in µs")
    parser.add_argument("--claims", action="store_true",
                        help="measure the seed article's claim instead")
    args = parser.parse_args()
    return _claims(args) if args.claims else _bill(args)


if __name__ == "__main__":
    raise SystemExit(main())
