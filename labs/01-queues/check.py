"""Check lab 01: does the simulated queue agree with the formula? (python check.py -s SEED)"""

from __future__ import annotations

import argparse

from virtlab.labs.queues import LAB, simulate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-s", "--seed", type=int, default=0)
    args = parser.parse_args()
    text, context = LAB.problem(args.seed)
    print(text)
    answers = {a.name: a.value for a in LAB.answers(context)}
    mean, half = simulate(context, seed=args.seed)
    inside = abs(mean - answers["W"]) <= half
    print(f"formula:   W = {answers['W']:.2f} µs")
    print(f"simulated: W = {mean:.2f} ± {half:.2f} µs (95 % CI over replications)")
    print("agree" if inside else "outside the 95 % CI (this happens 1 time in 20 by chance; "
                                 "try another seed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
