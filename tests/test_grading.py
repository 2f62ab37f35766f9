"""Autograded exercises: right answers pass, wrong ones fail, the key never prints.

Every exercise's expected value comes from running the model (virtlab.grading); these tests
compute each once (about 20 s in all).
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from virtlab import grading

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.md"))
CHECK_CALL = re.compile(r'^check\("([^"]+)", answer\)$', re.MULTILINE)


def _course():
    spec = importlib.util.spec_from_file_location("course", ROOT / "tools" / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(grading.EXERCISES))
def test_expected_value_passes_and_wrong_values_fail(name, capsys):
    exercise = grading.EXERCISES[name]
    value = grading.expected(name)
    assert math.isfinite(value)
    assert grading.grade(name, value)
    margin = max(exercise.rel_tol * abs(value), exercise.abs_tol)
    assert grading.grade(name, value + margin / 2)          # inside the tolerance
    for wrong in (value * 1.5 + 1, value * 0.5 - 1, value + 2 * margin + 1):
        assert not grading.grade(name, wrong), wrong
    grading.check(name, value * 1.5 + 1)
    line = capsys.readouterr().out
    assert line.startswith(f"[fail] {name}: ") and "too high" in line
    if len(f"{value:g}") >= 4:                                # the key is not printed
        assert f"{value:g}" not in line


def test_placeholder_and_non_numbers_are_not_graded_as_right(capsys):
    name = next(iter(grading.EXERCISES))
    assert not grading.grade(name, ...)
    assert not grading.grade(name, None)
    assert not grading.grade(name, "seventeen")
    assert not grading.grade(name, float("nan"))
    grading.check(name, ...)
    assert capsys.readouterr().out.startswith(f"[todo] {name}: not answered yet")
    with pytest.raises(KeyError, match="no exercise"):
        grading.check("99.nope", 1)


def test_notebooks_and_registry_agree():
    used = [n for p in NOTEBOOKS for n in CHECK_CALL.findall(p.read_text(encoding="utf-8"))]
    assert sorted(used) == sorted(grading.EXERCISES)
    for path in NOTEBOOKS:
        prefix = path.name[:2]
        names = CHECK_CALL.findall(path.read_text(encoding="utf-8"))
        assert all(n.startswith(prefix + ".") for n in names), (path.name, names)
        assert [e.name for e in grading.exercises_of(prefix)] == names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_version_has_no_answers(path):
    jupytext = pytest.importorskip("jupytext", reason="install the [test] extra")
    text = path.read_text(encoding="utf-8")
    student = _course().strip_answers(text)
    markers = text.count("# ANSWER")
    assert markers == len(CHECK_CALL.findall(text))
    assert "# ANSWER" not in student
    assert student.count("answer = ...  # your answer") == markers
    assert CHECK_CALL.findall(student) == CHECK_CALL.findall(text)
    assert len(jupytext.reads(student, fmt="md:myst").cells) == len(jupytext.read(path).cells)


@pytest.mark.notebook
def test_grade_command_reports_pass_fail_and_todo(tmp_path):
    pytest.importorskip("nbclient", reason="install the [test] extra")
    submission = tmp_path / "submission.md"
    submission.write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "```{code-cell} ipython3\nfrom virtlab.grading import check\n"
        "check('04.need-event', 1)\ncheck('04.busy-kicks', 7)\ncheck('03.e1000-exits', ...)\n"
        "```\n", encoding="utf-8")
    table = tmp_path / "grades.csv"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "course.py"), "grade",
                           str(submission), "--csv", str(table)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1/3 passed" in done.stdout
    rows = table.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "submission,exercise,verdict"
    assert sorted(rows[1:]) == ["submission.md,03.e1000-exits,todo",
                                "submission.md,04.busy-kicks,fail",
                                "submission.md,04.need-event,pass"]


def test_grade_command_missing_file_is_one_line_status_2(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "course.py"), "grade",
                           str(tmp_path / "nope.md")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no such file" in done.stderr
