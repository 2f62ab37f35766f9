"""Every notebook executes top to bottom, and every autograded test in it passes as committed.

The committed notebooks are otter-grader source notebooks: each exercise's solution cell
assigns the model-derived answer and its test cells (``require(...)``, public, and
``require_fresh(...)``, hidden) run right after it, so an executed notebook stops with an error
at the first wrong solution. That wrong answers fail is shown in tests/test_grading.py (on the
otter tests of every exercise, without executing every notebook twice).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.md"))
REQUIRE = re.compile(r'^require\("([^"]+)", \w+\)$', re.MULTILINE)


def test_there_are_at_least_eight_notebooks_each_with_three_exercises():
    assert len(NOTEBOOKS) >= 8, [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        names = REQUIRE.findall(path.read_text(encoding="utf-8"))
        assert len(names) >= 3, (path.name, names)
        assert len(set(names)) == len(names), (path.name, names)


def test_every_notebook_states_learning_objectives_and_uses_no_hard_coded_approach_count():
    for path in NOTEBOOKS[2:]:  # 01 and 02 predate the template
        text = path.read_text(encoding="utf-8")
        assert "**Learning objectives.**" in text, path.name
    for path in NOTEBOOKS:
        text = path.read_text(encoding="utf-8")
        assert "four approaches" not in text and "range(4)" not in text, path.name


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_and_its_checks_pass(path, monkeypatch):
    jupytext = pytest.importorskip("jupytext", reason="install the [test] extra")
    nbclient = pytest.importorskip("nbclient", reason="install the [test] extra")
    # The kernel's own inline backend draws figures as PNG outputs (no display needed); an
    # inherited MPLBACKEND would replace it and the figures would not be drawn.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError (naming the cell) if any cell fails
    errors = [o for cell in notebook.cells for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    wanted = REQUIRE.findall(path.read_text(encoding="utf-8"))
    ran = [name for cell in notebook.cells if cell.cell_type == "code"
           and cell.get("execution_count") for name in REQUIRE.findall(cell.source)]
    assert ran == wanted, ran                       # every public test ran (and passed)
    hidden = sum(cell.source.startswith("# HIDDEN") and bool(cell.get("execution_count"))
                 for cell in notebook.cells if cell.cell_type == "code")
    assert hidden == len(wanted)                   # and every hidden test
    figures = sum("image/png" in o.get("data", {}) for cell in notebook.cells
                  for o in cell.get("outputs", []))
    assert figures >= 1, "every notebook draws at least one figure"
