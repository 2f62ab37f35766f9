"""Check lab 02: the exits of one emulated request, counted three ways, and your answers.

    python labs/02-exits/check.py -s 2                          # the problem, checked
    python labs/02-exits/check.py -s 2 --exits 14 --exit-us 21.7  # ... and your answers

Prints the problem of seed SEED, then the request's exits by reason as the model counted them,
next to what the e1000 access tables say (virtlab.paths.emulation.analytic, computed from the
parameters without running the model), and the CPU time of those exits. Exit status 0 when the
two counts agree and your answers (if given) are right within the lab's tolerance.
"""

from __future__ import annotations

import argparse

from virtlab.labs.exits import LAB, one_request, scenario
from virtlab.paths.emulation.analytic import transaction_bill

REASONS = ("mmio", "pio", "inject", "eoi", "other")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--seed", type=int, default=0, help="problem seed (default 0)")
    parser.add_argument("--exits", type=float, help="your answer: exits of the request")
    parser.add_argument("--exit-us", type=float, help="your answer: CPU µs of those exits")
    args = parser.parse_args()
    text, ctx = LAB.problem(args.seed)
    print(text)
    record = one_request(ctx)
    bill = transaction_bill(scenario(ctx))
    print(f"{'reason':<8} {'model':>6} {'tables':>7} {'model µs':>9}")
    for reason in REASONS:
        print(f"{reason:<8} {getattr(record, f'exits_{reason}'):>6} {bill.exits[reason]:>7} "
              f"{getattr(record, f'exit_{reason}_us'):>9.3f}")
    print(f"{'total':<8} {record.exits:>6} {sum(bill.exits.values()):>7} "
          f"{record.cpu_exit_us:>9.3f}")
    print(f"to user space (the device model): {record.exits_user} (tables: {bill.user_exits})")
    agree = record.exits == sum(bill.exits.values())
    print("model and access tables agree" if agree else "model and access tables DISAGREE")
    status = 0 if agree else 1
    answers = {a.name: a.value for a in LAB.answers(ctx)}
    for name, given in (("exits", args.exits), ("exit_us", args.exit_us)):
        if given is None:
            continue
        right = abs(given - answers[name]) <= LAB.tolerance * max(abs(answers[name]), 1e-12)
        print(f"your {name} = {given:g}: {'right' if right else 'wrong'} "
              f"(within {LAB.tolerance:.0%})")
        status |= 0 if right else 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
