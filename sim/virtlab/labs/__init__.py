"""Generated exercises in the OSTEP style: ``virtlab lab NAME -s SEED [-c] [--check ...]``.

Without ``-c`` a lab prints a problem generated from the seed and the questions. With ``-c`` it
prints the computed answers (and how they were computed). ``--check "name=value,..."`` compares
a student's answers with the computed ones and exits 0 when all are within tolerance.
Lab logic lives here; ``labs/NN-topic/README.md`` explains each lab.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from virtlab.errors import ConfigError

__all__ = ["Lab", "Answer", "LABS", "FOLDER_ALIASES", "add_commands", "register", "resolve"]


@dataclass(frozen=True)
class Answer:
    """One computed answer: its name, value, unit and how it was obtained.

    ``tolerance`` (relative) overrides the lab's for this answer; 0 means exact (a flag word,
    a PID, a uid).
    """

    name: str
    value: float
    unit: str
    how: str
    tolerance: float | None = None


@dataclass(frozen=True)
class Lab:
    """A generated exercise.

    ``problem(seed)`` returns ``(text, context)``; ``answers(context)`` computes the answers from
    the same context, so problem and answers always agree.
    """

    name: str
    title: str
    problem: Callable[[int], tuple[str, Any]]
    answers: Callable[[Any], list[Answer]]
    tolerance: float = 0.02


LABS: dict[str, Lab] = {}

#: The folder names under ``labs/`` (``01-queues``) accepted as aliases of the registered names.
FOLDER_ALIASES: dict[str, str] = {"01-queues": "queues", "02-exits": "exits",
                                  "03-emulation": "emulation", "04-rings": "rings",
                                  "05-scheduling": "scheduling", "06-namespaces": "namespaces"}


def resolve(name: str) -> str:
    """The registered lab name for ``name``: itself, or the lab of a ``labs/`` folder name."""
    return FOLDER_ALIASES.get(name, name)


def register(lab: Lab) -> Lab:
    """Add a lab to the registry (labs register themselves on import)."""
    LABS[lab.name] = lab
    return lab


def _load_builtin_labs() -> None:
    from virtlab.labs import (  # noqa: F401  (registration side effect)
        emulation,
        exits,
        namespaces,
        queues,
        rings,
        scheduling,
    )


def _fmt(value: float) -> str:
    """Integers (ring indexes, counts) in full; other values to 4 significant digits."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _parse_check(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError("--check", f"expected name=value pairs, got {part.strip()!r}")
        name, value = part.split("=", 1)
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise ConfigError("--check", f"{name.strip()}: not a number: {value!r}") from None
    return values


def run_lab(name: str, seed: int, show_answers: bool, check: str | None) -> int:
    """Print a lab's problem (and answers, or a check of given answers); return exit status."""
    _load_builtin_labs()
    name = resolve(name)
    if name not in LABS:
        folders = ", ".join(f"{f} ({n})" for f, n in FOLDER_ALIASES.items())
        raise ConfigError("lab", f"must be one of {', '.join(sorted(LABS))} or a folder name: "
                                 f"{folders}; got {name!r}")
    if seed < 0:
        raise ConfigError("--seed", f"must be a non-negative integer, got {seed}")
    lab = LABS[name]
    text, context = lab.problem(seed)
    answers = lab.answers(context) if (show_answers or check is not None) else []
    given = _parse_check(check) if check is not None else {}
    known = {a.name: a for a in answers}
    unknown = sorted(set(given) - set(known))
    if unknown:  # checked before anything is printed: a bad --check gets one line
        raise ConfigError("--check", f"unknown answer {unknown[0]!r}; answers are "
                                     f"{', '.join(known)}")
    print(f"ARG lab {name}")
    print(f"ARG seed {seed}")
    print()
    print(text.rstrip())
    if not show_answers and check is None:
        print("\nRun again with -c to see the answers, or --check 'name=value,...' to check "
              "yours.")
        return 0
    if show_answers:
        print("\nAnswers:")
        for a in answers:
            print(f"  {a.name} = {_fmt(a.value)} {a.unit}".rstrip() + f"    ({a.how})")
    if check is None:
        return 0
    print("\nCheck:")
    ok = True
    for name_, value in given.items():
        expected = known[name_].value
        tolerance = known[name_].tolerance
        tolerance = lab.tolerance if tolerance is None else tolerance
        good = abs(value - expected) <= tolerance * max(abs(expected), 1e-12)
        ok &= good
        verdict = "ok" if good else ("not quite (exactly this value expected)" if not tolerance
                                     else f"not quite (within {tolerance:.0%} expected)")
        print(f"  {name_}: {_fmt(value)} -> {verdict}")
    missing = [a.name for a in answers if a.name not in given]
    if missing:
        print(f"  not answered: {', '.join(missing)}")
    return 0 if ok and not missing else 1


def add_commands(subparsers: Any) -> None:
    """Register ``virtlab lab``."""
    _load_builtin_labs()
    parser = subparsers.add_parser(
        "lab", help="generate an exercise (OSTEP style): -s SEED, -c for answers",
        description="Generate a problem from a seed; -c prints the answers; --check compares "
                    "your answers. Labs: " + ", ".join(f"{n} ({lab.title})"
                                                     for n, lab in sorted(LABS.items())),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="lab name: " + ", ".join(sorted(LABS))
                        + " (or its folder name: " + ", ".join(FOLDER_ALIASES) + ")")
    parser.add_argument("-s", "--seed", type=int, default=0, help="problem seed (default 0)")
    parser.add_argument("-c", "--compute", action="store_true", help="print the answers")
    parser.add_argument("--check", metavar="NAME=VALUE,...", help="check your answers")
    parser.set_defaults(func=lambda a: run_lab(a.name, a.seed, a.compute, a.check))
