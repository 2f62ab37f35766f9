"""The documentation agrees with the code it describes."""

from __future__ import annotations

import re
from pathlib import Path

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
            cited.update(re.findall(r"\b(S\d+b?|F14|B03|AA06|SU01)\b", source))
    missing = sorted(cited - explained)
    assert not missing, f"source keys cited in code but not in docs/sources.md: {missing}"
