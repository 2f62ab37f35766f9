"""The documentation agrees with the code it describes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from virtlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- BEGIN GENERATED: virtlab params --markdown -->"
END = "<!-- END GENERATED -->"


def _generated(capsys) -> str:
    assert main(["params", "--markdown"]) == 0
    return capsys.readouterr().out.strip()


def test_parameter_page_is_up_to_date(capsys):
    page = (ROOT / "docs" / "parameters.md").read_text(encoding="utf-8")
    current = page.split(BEGIN)[1].split(END)[0].strip()
    assert current == _generated(capsys), (
        "docs/parameters.md is stale: run `python tools/update_docs.py`")


def test_every_source_key_cited_in_code_is_explained():
    sources = (ROOT / "docs" / "sources.md").read_text(encoding="utf-8")
    known = set(re.findall(r"^\| ((?:S\d+b?|[A-Z]{1,2}\d\d)(?:, (?:S\d+b?|[A-Z]{1,2}\d\d))*) \|",
                           sources, re.M))
    explained = {k.strip() for group in known for k in group.split(",")}
    cited = set()
    for path in (ROOT / "sim" / "virtlab").rglob("*.py"):
        for source in re.findall(r'source="([^"]*)"', path.read_text(encoding="utf-8")):
            cited.update(re.findall(r"\b(S\d+b?|[A-Z]{1,2}\d\d)\b", source))
    missing = sorted(cited - explained)
    assert not missing, f"source keys cited in code but not in docs/sources.md: {missing}"


#: Notes kept beside the repository (never shipped, never seen by users) that the project must
#: not refer to: citations go to the original sources in docs/sources.md instead. The names are
#: assembled from parts so that this file, scanned like every other, does not cite them itself.
_NOTES_FOLDER = "/".join(("..", "shared"))
_NOTES_SUBFOLDER = "/".join(("shared", "reference"))
_NOTE_FILES = tuple(f"{stem}.md" for stem in ("mechanics", "published-results"))
OUTSIDE_NOTES = re.compile("|".join(re.escape(text) for text in
                                    (*_NOTE_FILES, _NOTES_FOLDER, _NOTES_SUBFOLDER)))


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode("utf-8")
    return [name for name in listing.split("\0") if name]


def test_no_file_refers_to_notes_outside_the_repository():
    # The scan can hit: each name alone, and a typical citation.
    for text in (*_NOTE_FILES, _NOTES_FOLDER, f"see {_NOTES_FOLDER}/reference/{_NOTE_FILES[0]}"):
        assert OUTSIDE_NOTES.search(text), text
    offenders = []
    for name in _tracked_files():
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the work tree but still in the index
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # a binary file (an image): no citations in it
        offenders += [f"{name}:{number}: {line.strip()}"
                      for number, line in enumerate(text.splitlines(), 1)
                      if OUTSIDE_NOTES.search(line)]
    assert not offenders, ("cite the original source (a key of docs/sources.md) instead of "
                           "notes outside the repository:\n" + "\n".join(offenders))
