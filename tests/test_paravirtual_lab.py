"""Lab 04 (rings): transcripts are stable, answers are checkable, the README's claims hold.

The golden transcripts in labs/04-rings/golden are regression tests (they pin the generated
problems and the output format), not validation: the answers come from replaying each script
on the real :class:`~virtlab.paths.virtqueue.SplitVirtqueue`, which the stateful tests check.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from virtlab.labs import rings as ringlab

LAB_DIR = Path(__file__).resolve().parents[1] / "labs" / "04-rings"
GOLDEN = LAB_DIR / "golden"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transcript_matches_golden(seed, capsys):
    assert ringlab.main(["-s", str(seed), "-c"]) == 0
    out = capsys.readouterr().out
    golden = GOLDEN / f"check-s{seed}.txt"
    if not golden.exists():
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(out, encoding="utf-8")
        pytest.fail(f"{golden.name} did not exist and was written; review and commit it")
    assert out == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("seed", range(12))
def test_check_accepts_the_answers_and_rejects_wrong_ones(seed, capsys):
    _, script = ringlab._problem(seed)
    answers = ringlab._answers(script)
    right = ",".join(f"{a.name}={int(a.value)}" for a in answers)
    wrong = ",".join(f"{a.name}={int(a.value) + 1}" for a in answers)
    assert ringlab.main(["-s", str(seed), "--check", right]) == 0
    assert ringlab.main(["-s", str(seed), "--check", wrong]) == 1
    assert ringlab.main(["-s", str(seed), "--check", right.split(",")[0]]) == 1   # incomplete
    capsys.readouterr()


@pytest.mark.parametrize("seed", range(30))
def test_scripts_are_consistent(seed):
    """Generated scripts never overfill the ring, and a sleeping device is always kicked."""
    script = ringlab.make_script(seed)
    vq, _lines, kicks, _irqs = ringlab.replay(script)
    vq.check()
    added = sum(k for action, k in script.actions if action == "add")
    assert vq.avail_idx == (script.start + added) & 0xFFFF
    if added:
        assert kicks >= 1


def test_the_readme_claims_hold(capsys):
    spec = importlib.util.spec_from_file_location("rings_check", LAB_DIR / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.check_claims() == 0, capsys.readouterr().out
