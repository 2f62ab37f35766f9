"""Labs: problems and answers agree; answers are checkable; -c transcripts are stable.

The golden transcripts in tests/golden are regression tests (they pin the output format and
the generated problems), not validation; the queueing lab's answers are validated against
simulation in test_queues_lab_agrees_with_simulation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from virtlab.cli import main
from virtlab.labs import LABS, _load_builtin_labs

GOLDEN = Path(__file__).resolve().parent / "golden"
_load_builtin_labs()


@pytest.mark.parametrize("name", ["queues"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lab_transcript_matches_golden(name, seed, capsys):
    assert main(["lab", name, "-s", str(seed), "-c"]) == 0
    out = capsys.readouterr().out
    golden = GOLDEN / f"lab-{name}-s{seed}.txt"
    if not golden.exists():
        golden.write_text(out, encoding="utf-8")
        pytest.fail(f"{golden.name} did not exist and was written; review and commit it")
    assert out == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(LABS))
def test_check_accepts_the_computed_answers_and_rejects_wrong_ones(name, capsys):
    lab = LABS[name]
    _, context = lab.problem(5)
    answers = lab.answers(context)
    right = ",".join(f"{a.name}={a.value}" for a in answers)
    wrong = ",".join(f"{a.name}={a.value * 1.5 + 1}" for a in answers)
    assert main(["lab", name, "-s", "5", "--check", right]) == 0
    assert main(["lab", name, "-s", "5", "--check", wrong]) == 1
    capsys.readouterr()


def test_unknown_lab_is_one_line_status_2(capsys):
    assert main(["lab", "nope"]) == 2
    assert capsys.readouterr().err.strip().startswith("virtlab: error: lab: must be one of")


@pytest.mark.slow
def test_queues_lab_agrees_with_simulation():
    from virtlab.labs.queues import LAB, simulate
    from virtlab.stats import mean_ci  # noqa: F401

    _, context = LAB.problem(1)
    w = {a.name: a.value for a in LAB.answers(context)}["W"]
    mean, half = simulate(context, seed=3)
    assert abs(mean - w) <= 3 * half, (mean, half, w)
