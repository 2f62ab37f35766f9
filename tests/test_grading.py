"""Autograded exercises (otter-grader): right answers pass, wrong ones fail, the key never ships.

Every exercise's expected value comes from running the model (virtlab.grading); these tests
compute each once (about 20 s in all). ``tools/course.py assign`` runs ``otter assign`` on
every notebook once for the module (a few seconds each); the otter tests it writes are then run
on the right and on wrong answers without executing the notebooks. The grading command itself
(``otter run`` on a filled-in student notebook) is exercised on notebook 03, the quickest.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from virtlab import grading

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.md"))
REQUIRE = re.compile(r'^require\("([^"]+)", (\w+)\)$', re.MULTILINE)
HIDDEN = re.compile(r'^# HIDDEN\nfrom virtlab\.grading import require_fresh\n\n'
                    r'require_fresh\("([^"]+)", (\w+)\)$', re.MULTILINE)


def _course():
    spec = importlib.util.spec_from_file_location("course", ROOT / "tools" / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _variables(path: Path) -> dict[str, str]:
    """Exercise name -> the variable its tests read, from a MyST source notebook."""
    return dict(REQUIRE.findall(path.read_text(encoding="utf-8")))


def _wrong_values(value: float, margin: float) -> tuple[float, ...]:
    return (value * 1.5 + 1, value * 0.5 - 1, value + 2 * margin + 1)


@pytest.mark.parametrize("name", sorted(grading.EXERCISES))
def test_expected_value_passes_and_wrong_values_fail(name, capsys):
    exercise = grading.EXERCISES[name]
    value = grading.expected(name)
    assert math.isfinite(value)
    assert grading.grade(name, value)
    grading.require(name, value)                              # silent on a right answer
    margin = max(exercise.rel_tol * abs(value), exercise.abs_tol)
    assert grading.grade(name, value + margin / 2)          # inside the tolerance
    for wrong in _wrong_values(value, margin):
        assert not grading.grade(name, wrong), wrong
        with pytest.raises(AssertionError, match=rf"^\[fail\] {re.escape(name)}: "):
            grading.require(name, wrong)
    grading.check(name, value * 1.5 + 1)
    line = capsys.readouterr().out
    assert line.startswith(f"[fail] {name}: ") and "too high" in line
    if len(f"{value:g}") >= 4:                                # the key is not printed
        assert f"{value:g}" not in line


def test_placeholder_bools_and_non_numbers_are_not_graded_as_right(capsys):
    name = "04.need-event"                                    # its right answer is 1
    assert grading.grade(name, 1)
    for bad in (..., None, "seventeen", float("nan"), True):
        assert not grading.grade(name, bad), bad
        with pytest.raises(AssertionError):
            grading.require_fresh(name, bad)
    grading.check(name, ...)
    assert capsys.readouterr().out.startswith(f"[todo] {name}: not answered yet")
    with pytest.raises(KeyError, match="no exercise"):
        grading.check("99.nope", 1)


def test_the_hidden_test_ignores_a_tampered_checker(monkeypatch):
    monkeypatch.setattr(grading, "_grade", lambda name, answer, say: True)
    grading.require("04.busy-kicks", 99)                      # the tampered public test passes
    with pytest.raises(AssertionError, match="too high"):
        grading.require_fresh("04.busy-kicks", 99)            # the hidden one does not
    grading.require_fresh("04.busy-kicks", grading.expected("04.busy-kicks"))


def test_notebooks_and_registry_agree():
    used = [n for p in NOTEBOOKS for n in _variables(p)]
    assert sorted(used) == sorted(grading.EXERCISES)
    for path in NOTEBOOKS:
        text = path.read_text(encoding="utf-8")
        public = REQUIRE.findall(text)
        assert [e.name for e in grading.exercises_of(path.name[:2])] == [n for n, _ in public]
        assert HIDDEN.findall(text) == public                 # one hidden test per question
        for name, _ in public:
            assert f"# BEGIN QUESTION\nname: {grading.otter_name(name)}\n" in text, name


@pytest.fixture(scope="module")
def assigned(tmp_path_factory):
    pytest.importorskip("otter", reason="install the [test] extra (otter-grader)")
    pytest.importorskip("jupytext", reason="install the [test] extra")
    out = tmp_path_factory.mktemp("course")
    course = _course()
    for path in NOTEBOOKS:
        course.assign_one(path, out)
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_version_has_no_solution_and_no_hidden_test(assigned, path):
    import nbformat

    variables = _variables(path)
    student = nbformat.read(assigned / "student" / f"{path.stem}.ipynb", as_version=4)
    key = nbformat.read(assigned / "autograder" / f"{path.stem}.ipynb", as_version=4)
    assert sorted(p.name for p in (assigned / "student").iterdir()
                  if p.name.startswith(path.stem)) == [f"{path.stem}.ipynb"]
    student_file = (assigned / "student" / f"{path.stem}.ipynb").read_text(encoding="utf-8")
    for hidden in ("require_fresh", "# HIDDEN", "# SOLUTION", "BEGIN PROMPT"):
        assert hidden not in student_file, hidden
    student_text = "\n".join(c.source for c in student.cells)
    for name, variable in variables.items():
        solution = [c.source for c in key.cells
                    if c.cell_type == "code" and re.match(rf"(# BEGIN SOLUTION NO PROMPT\n)?"
                                                          rf"{variable} = ", c.source)]
        assert len(solution) == 1, (name, solution)
        answer_cells = [c.source for c in student.cells
                        if c.cell_type == "code" and c.source.startswith(f"{variable} =")]
        assert answer_cells == [f"{variable} = ..."], (name, answer_cells)
        assignment = solution[0].removeprefix("# BEGIN SOLUTION NO PROMPT\n").split("\n")[0]
        assignment = assignment.split("# SOLUTION")[0].strip()
        assert len(assignment) > len(f"{variable} = ..."), (name, assignment)
        assert assignment not in student_text, (name, assignment)
        check = f'grader.check("{grading.otter_name(name)}")'
        assert sum(c.source == check for c in student.cells) == 1, check
    public = student.metadata["otter"]["tests"]
    assert sorted(public) == sorted(grading.otter_name(n) for n in variables)
    assert all(not case["hidden"] for t in public.values() for s in t["suites"]
               for case in s["cases"])
    assert student.cells[0].source.splitlines()[1:] == [
        "import otter", f'grader = otter.Notebook("{path.stem}.ipynb")']


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_otter_tests_pass_right_answers_and_fail_wrong_ones(assigned, path, tmp_path):
    from otter.test_files import OKTestFile

    with zipfile.ZipFile(assigned / "autograder" / f"{path.stem}.zip") as archive:
        archive.extractall(tmp_path)
    for name, variable in _variables(path).items():
        test_file = tmp_path / "tests" / f"{grading.otter_name(name)}.py"
        exercise = grading.EXERCISES[name]
        value = grading.expected(name)
        margin = max(exercise.rel_tol * abs(value), exercise.abs_tol)

        def run(answer, test_file=test_file, variable=variable):
            test = OKTestFile.from_file(str(test_file))
            test.run({variable: answer})
            return test

        right = run(value)
        assert right.passed_all and right.grade == 1.0, (name, right.summary())
        assert len(right.test_case_results) == len(right.test_cases) == 2, name
        assert [c.hidden for c in right.test_cases] == [False, True], name  # public, hidden
        for wrong in _wrong_values(value, margin)[:2]:
            failed = run(wrong)
            assert not failed.passed_all_public and failed.grade == 0.0, (name, wrong)
            assert "too high" in failed.summary() or "too low" in failed.summary()


@pytest.mark.notebook
def test_student_checks_locally_and_the_grading_command_scores(assigned, tmp_path):
    """Notebook 03's student version, filled in (one right, one wrong, one left blank)."""
    import nbclient
    import nbformat

    stem = "03-anatomy-of-an-emulated-device"
    notebook = nbformat.read(assigned / "student" / f"{stem}.ipynb", as_version=4)
    fill = {"e1000_exits = ...": "e1000_exits = packet.exits",
            "ide_minus_ahci = ...": "ide_minus_ahci = 1000"}
    filled = 0
    for cell in notebook.cells:
        if cell.source in fill:
            cell.source, filled = fill[cell.source], filled + 1
    assert filled == 2
    submission = tmp_path / f"{stem}.ipynb"
    nbformat.write(notebook, submission)

    # The student's grader.check in a plain kernel.
    executed = nbformat.read(submission, as_version=4)
    nbclient.NotebookClient(executed, timeout=600, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = {}
    for cell in executed.cells:
        match = re.fullmatch(r'grader\.check\("(\w+)"\)', cell.source)
        if match:
            outputs = json.dumps(cell.get("outputs", []))
            shown[match.group(1)] = outputs
    assert "passed" in shown["q03_e1000_exits"] and "failed" not in shown["q03_e1000_exits"]
    assert "too high" in shown["q03_ide_minus_ahci"]
    assert "failed" in shown["q03_apicv_saving"]             # still `...`

    table = tmp_path / "grades.csv"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "course.py"), "grade",
                           str(assigned / "autograder" / f"{stem}.zip"), str(submission),
                           "--csv", str(table)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"{stem}.ipynb: 1/3" in done.stdout, done.stdout
    with table.open(encoding="utf-8") as handle:
        rows = {r["question"]: (r["score"], r["max_score"]) for r in csv.DictReader(handle)}
    assert rows == {"q03_e1000_exits": ("1", "1"), "q03_ide_minus_ahci": ("0", "1"),
                    "q03_apicv_saving": ("0", "1")}


def test_course_commands_refuse_bad_input_in_one_line(tmp_path):
    for args in (["grade", str(tmp_path / "nope.zip"), str(tmp_path / "a.ipynb")],
                 ["assign", str(tmp_path / "out"), str(tmp_path / "nope.md")]):
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "course.py"), *args],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("course.py: error: ") and done.stderr.count("\n") == 1
