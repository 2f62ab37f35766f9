#!/usr/bin/env python3
"""The course pack's instructor commands: student versions of the notebooks, and grading.

    python tools/course.py student OUT_DIR            # notebooks with the answers taken out
    python tools/course.py grade SUBMISSION... [--csv FILE]   # run submissions, tabulate checks

``student`` copies ``notebooks/*.md`` to OUT_DIR with every answer (the statement that ends in
``# ANSWER``, possibly spread over several lines starting at ``answer =``) replaced by
``answer = ...  # your answer``; the ``check(...)`` calls stay, and print ``[todo]`` until the
student fills the answer in. ``grade`` executes each submission (``.md`` MyST or ``.ipynb``)
top to bottom in a fresh kernel and reads the ``[pass]``/``[fail]``/``[todo]`` lines that
:func:`virtlab.grading.check` printed; a notebook that stops with an error is graded up to
that cell. Exit status 0 when every submission ran; the table goes to stdout, the CSV to FILE.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
_VERDICT = re.compile(r"^\[(pass|fail|todo)\] (\S+?):", re.MULTILINE)


def strip_answers(text: str) -> str:
    """``text`` (a MyST notebook) with each ``answer = ... # ANSWER`` statement blanked."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    start: int | None = None
    for line in lines:
        if line.startswith("answer ="):
            start = len(out)
        out.append(line)
        if line.rstrip().endswith("# ANSWER"):
            if start is None:
                raise ValueError(f"'# ANSWER' without a preceding 'answer =': {line.strip()}")
            del out[start:]
            out.append("answer = ...  # your answer\n")
            start = None
    return "".join(out)


def student(out_dir: Path) -> int:
    """Write the student versions of every notebook to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(NOTEBOOKS.glob("*.md")):
        (out_dir / path.name).write_text(strip_answers(path.read_text(encoding="utf-8")),
                                         encoding="utf-8")
        print(f"{path.name} -> {out_dir / path.name}")
    return 0


def verdicts(notebook) -> dict[str, str]:
    """Exercise name -> pass/fail/todo, from an executed notebook's stream outputs."""
    found: dict[str, str] = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                for verdict, name in _VERDICT.findall(output.get("text", "")):
                    found[name] = verdict
    return found


def run_submission(path: Path, timeout_s: int = 600) -> tuple[dict[str, str], str | None]:
    """Execute one submission; return its verdicts and the error that stopped it (if any)."""
    import jupytext
    import nbclient

    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                                     allow_errors=False,
                                     resources={"metadata": {"path": str(path.parent)}})
    error = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        error = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return verdicts(notebook), error


def grade(paths: list[Path], csv_path: Path | None) -> int:
    """Grade submissions; print a table (and write a CSV); 0 when every submission ran."""
    rows = []
    status = 0
    for path in paths:
        found, error = run_submission(path)
        passed = sum(v == "pass" for v in found.values())
        print(f"{path.name}: {passed}/{len(found)} passed"
              + (f"; stopped: {error}" if error else ""))
        for name, verdict in sorted(found.items()):
            print(f"  {name:<28} {verdict}")
            rows.append({"submission": path.name, "exercise": name, "verdict": verdict})
        if error:
            status = 1
            rows.append({"submission": path.name, "exercise": "", "verdict": f"error: {error}"})
    if csv_path is not None:
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["submission", "exercise", "verdict"])
            writer.writeheader()
            writer.writerows(rows)
    return status


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run ``student`` or ``grade``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="write the notebooks without their answers")
    s.add_argument("out_dir", type=Path)
    g = sub.add_parser("grade", help="execute submissions and tabulate their checks")
    g.add_argument("submissions", type=Path, nargs="+")
    g.add_argument("--csv", type=Path, help="also write the verdicts to this CSV file")
    args = parser.parse_args(argv)
    if args.command == "student":
        return student(args.out_dir)
    missing = [p for p in args.submissions if not p.is_file()]
    if missing:
        print(f"course.py: error: {missing[0]}: no such file", file=sys.stderr)
        return 2
    return grade(args.submissions, args.csv)


if __name__ == "__main__":
    sys.exit(main())
