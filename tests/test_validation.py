"""virtlab validate: the rule, the fast form's pass count, the generated page, the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtlab.cli import main
from virtlab.validation import COMPARISONS, RECORDED_PASSES, judge, validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model, published, ok", [
    (1.80, 1.808, True),      # close
    (2.30, 1.808, False),     # 27 % too high
    (1.34, 1.808, False),     # 25.9 % too low
    (0.97, 1.02, False),      # within 25 % but on the other side of 1.0
    (1.003, 0.98, True),      # at 1.0 (within 0.5 %): matches either side
    (float("nan"), 1.0, False),
])
def test_the_rule(model, published, ok):
    assert judge(model, published)[1] is ok


def test_fast_validation_keeps_its_recorded_pass_count():
    outcomes = validate(fast=True)
    assert len(outcomes) == len(COMPARISONS)
    assert not [o.error for o in outcomes if o.error]
    assert sum(o.passed for o in outcomes) >= RECORDED_PASSES


def test_generated_page_lists_every_comparison_and_explains_every_miss():
    page = (ROOT / "docs" / "validation.md").read_text()
    for comparison in COMPARISONS:
        assert f"| {comparison.key} |" in page
    misses = [line.split("|")[1].strip() for line in page.splitlines()
              if line.startswith("| ") and line.rstrip().endswith("**miss** |")]
    for key in misses:
        entry = next(c for c in COMPARISONS if c.key == key)
        assert entry.miss_mechanism, f"{key} misses without a suspected mechanism"
        assert f"* **{key}**" in page


def test_validate_json_is_one_document(capsys):
    status = main(["validate", "--fast", "--json", "--only", "NS-getpid-container"])
    data = json.loads(capsys.readouterr().out)
    assert status == 0 and data["passed"] == data["total"] == 1
    row = data["comparisons"][0]
    assert row["key"] == "NS-getpid-container" and row["passed"] is True


def test_unknown_comparison_is_one_line_and_status_2(capsys):
    assert main(["validate", "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("virtlab: error: --only:") and err.count("\n") == 1


def test_workload_flag_runs_one_application_guest(capsys):
    status = main(["compare", "--workload", "web", "--approaches", "native,paravirtual",
                   "--duration", "3ms", "--warmup", "1ms", "-r", "1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 0
    assert {e["kind"] for e in data["entries"]} == {"web"}
    assert {e["approach"] for e in data["entries"]} == {"native", "paravirtual"}
    assert all(e["throughput_per_s"] > 0 for e in data["entries"])
