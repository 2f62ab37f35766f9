#!/usr/bin/env python3
"""The course pack's instructor commands (otter-grader): assignments and grading.

    python tools/course.py assign OUT_DIR [NOTEBOOK...]     # student versions and answer key
    python tools/course.py grade AUTOGRADER.zip SUBMISSION... [--csv FILE]

``notebooks/*.md`` are otter-grader source notebooks written as MyST Markdown (otter's
``# BEGIN QUESTION`` / ``# BEGIN SOLUTION`` / ``# BEGIN TESTS`` raw cells). ``assign`` converts
each to ``.ipynb`` (jupytext) and runs ``otter assign`` on it, then lays the results out as

    OUT_DIR/student/NN-name.ipynb      the handout: solutions replaced by ``...``, public tests
                                       only, ``grader.check("qNN_slug")`` after each answer
    OUT_DIR/autograder/NN-name.ipynb   the answer key: solutions and all tests
    OUT_DIR/autograder/NN-name.zip     otter's autograder configuration (hidden tests included)

so the handout folder never contains a solution or a hidden test. ``grade`` runs ``otter run``
(otter's own grader, without Docker: it executes each submission top to bottom in the current
environment, offline) on every submission with one autograder zip, prints each submission's
score and per-question points, and writes one CSV row per (submission, question). Exit status 0
when every submission was graded, 1 when otter could not grade one, 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def _otter(*args: str, timeout_s: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otter", *args], capture_output=True,
                          text=True, timeout=timeout_s)


def assign_one(source: Path, out_dir: Path) -> tuple[Path, Path, Path]:
    """Run ``otter assign`` on one MyST source; return (student, key, autograder zip) paths."""
    import jupytext

    student_dir, key_dir = out_dir / "student", out_dir / "autograder"
    student_dir.mkdir(parents=True, exist_ok=True)
    key_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="virtlab-assign-") as scratch:
        master = Path(scratch) / "source" / f"{source.stem}.ipynb"
        master.parent.mkdir()
        jupytext.write(jupytext.read(source), master)
        result = Path(scratch) / "dist"
        # otter's own API (the same as ``otter assign --no-pdfs MASTER RESULT``), in-process:
        # importing otter costs seconds, once rather than once per notebook.
        from otter.assign import main as otter_assign

        with contextlib.redirect_stdout(io.StringIO()):
            otter_assign(str(master), str(result), no_pdfs=True)
        (archive,) = (result / "autograder").glob("*-autograder_*.zip")
        student = student_dir / master.name
        key = key_dir / master.name
        zipped = key_dir / f"{source.stem}.zip"
        shutil.copyfile(result / "student" / master.name, student)
        shutil.copyfile(result / "autograder" / master.name, key)
        shutil.copyfile(archive, zipped)
        leftovers = sorted(p.name for p in (result / "student").iterdir()
                           if p.name != master.name)
        if leftovers:  # tests live in the notebook's metadata: nothing else may be handed out
            raise RuntimeError(f"otter assign {source.name} wrote unexpected student files: "
                               f"{leftovers}")
    return student, key, zipped


def reading_version(notebook) -> None:
    """Strip the answer key from a (possibly executed) source notebook, in place.

    For pages that students read (the documentation site): otter's raw marker cells and the
    hidden tests go, each solution cell becomes what the student version shows
    (``variable = ...``, otter's own substitution) without outputs. The public tests stay.
    """
    from otter.assign.solutions import replace_solutions

    cells, in_solution = [], False
    for cell in notebook.cells:
        if cell.cell_type == "raw":
            marker = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            in_solution = {"# BEGIN SOLUTION": True, "# END SOLUTION": False}.get(
                marker, in_solution)
            continue
        if cell.cell_type == "code" and cell.source.startswith("# HIDDEN"):
            continue
        if in_solution and cell.cell_type == "code":
            cell.source = "\n".join(replace_solutions(cell.source.split("\n"), "python"))
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    notebook.cells = cells


def assign(out_dir: Path, sources: list[Path]) -> int:
    """Write the student versions and the answer key of ``sources`` into ``out_dir``."""
    for source in sources:
        student, key, zipped = assign_one(source, out_dir)
        print(f"{source.name}: {student.relative_to(out_dir)} (hand out); "
              f"{key.relative_to(out_dir)}, {zipped.relative_to(out_dir)} (keep)")
    print(f"course: hand out {out_dir / 'student'}; keep {out_dir / 'autograder'} (answer key)")
    return 0


def run_submission(autograder: Path, submission: Path) -> dict:
    """Grade one submission with ``otter run``; return otter's results (``results.json``)."""
    with tempfile.TemporaryDirectory(prefix="virtlab-grade-") as scratch:
        if submission.suffix == ".md":  # a MyST copy: otter grades notebooks
            import jupytext

            converted = Path(scratch) / f"{submission.stem}.ipynb"
            jupytext.write(jupytext.read(submission), converted)
            submission = converted
        out = Path(scratch) / "out"
        out.mkdir()
        done = _otter("run", "--no-logo", "-a", str(autograder), "-o", str(out),
                      str(submission))
        results = out / "results.json"
        if done.returncode != 0 or not results.is_file():
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"otter run failed: {tail[0]}")
        return json.loads(results.read_text(encoding="utf-8"))


def scores(results: dict) -> dict[str, tuple[float, float]]:
    """Question name -> (score, max score) from otter's results (the summary row left out)."""
    return {t["name"]: (float(t["score"]), float(t["max_score"]))
            for t in results["tests"] if "max_score" in t}


def grade(autograder: Path, paths: list[Path], csv_path: Path | None) -> int:
    """Grade ``paths`` with one autograder zip; print scores (and write a CSV)."""
    rows, status = [], 0
    for path in paths:
        try:
            found = scores(run_submission(autograder, path))
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            print(f"{path.name}: not graded: {err}")
            rows.append({"submission": path.name, "question": "", "score": "",
                         "max_score": "", "note": str(err)})
            status = 1
            continue
        total = sum(s for s, _ in found.values())
        possible = sum(m for _, m in found.values())
        print(f"{path.name}: {total:g}/{possible:g}")
        for name, (score, most) in sorted(found.items()):
            print(f"  {name:<28} {score:g}/{most:g}")
            rows.append({"submission": path.name, "question": name, "score": f"{score:g}",
                         "max_score": f"{most:g}", "note": ""})
    if csv_path is not None:
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["submission", "question", "score", "max_score",
                                             "note"])
            writer.writeheader()
            writer.writerows(rows)
    return status


def _error(message: str) -> int:
    print(f"course.py: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run ``assign`` or ``grade``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("assign", help="write student versions and the answer key (otter assign)")
    a.add_argument("out_dir", type=Path)
    a.add_argument("notebooks", type=Path, nargs="*",
                   help="MyST sources (default: every notebooks/*.md)")
    g = sub.add_parser("grade", help="grade submissions with otter run and tabulate the scores")
    g.add_argument("autograder", type=Path, help="OUT_DIR/autograder/NN-name.zip from assign")
    g.add_argument("submissions", type=Path, nargs="+", help=".ipynb (or MyST .md) files")
    g.add_argument("--csv", type=Path, help="also write the scores to this CSV file")
    args = parser.parse_args(argv)
    if args.command == "assign":
        sources = args.notebooks or sorted(NOTEBOOKS.glob("*.md"))
        for path in sources:
            if not path.is_file() or path.suffix != ".md":
                return _error(f"{path}: no such MyST notebook (give notebooks/NN-name.md)")
        return assign(args.out_dir, sources)
    if not args.autograder.is_file() or args.autograder.suffix != ".zip":
        return _error(f"{args.autograder}: no such autograder zip (course.py assign writes "
                      "OUT_DIR/autograder/NN-name.zip)")
    for path in args.submissions:
        if not path.is_file() or path.suffix not in (".ipynb", ".md"):
            return _error(f"{path}: no such submission (.ipynb or MyST .md)")
    return grade(args.autograder, args.submissions, args.csv)


if __name__ == "__main__":
    sys.exit(main())
