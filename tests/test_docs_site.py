"""The documentation site builds in MkDocs' strict mode, with the API reference and notebooks.

One build (about half a minute; notebook 04 executed so a rendered figure can be checked, the
others rendered without outputs): ``python tools/site.py build --no-execute`` is the same
minus that one execution. Broken links fail the build (shown on the link rewriter and on
MkDocs with the site's own validation settings).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mkdocs", reason="install the [docs] extra (dev.py installs it)")
pytest.importorskip("mkdocstrings", reason="install the [docs] extra (dev.py installs it)")


def _site():
    spec = importlib.util.spec_from_file_location("site_tool", ROOT / "tools" / "site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built_site():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "site.py"), "build", "--only",
                           "04"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return ROOT / "build" / "site"


def test_site_has_every_page_and_the_api_reference(built_site):
    for notebook in sorted((ROOT / "notebooks").glob("*.md")):
        assert (built_site / "notebooks" / notebook.stem / "index.html").is_file(), notebook
    for lab in sorted((ROOT / "labs").glob("0*")):
        assert (built_site / "labs" / lab.name / "index.html").is_file(), lab
    for page in ("instructor-guide", "api", "sources", "overview"):
        assert (built_site / page / "index.html").is_file(), page
    api = (built_site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("virtlab.model.run", "virtlab.experiment.compare",
                 "virtlab.experiment.replicate", "virtlab.capacity.capacity_search",
                 "virtlab.sweep.sweep", "virtlab.config.Scenario", "virtlab.grading.check"):
        assert f'id="{name}"' in api, name
    assert "Simulate <code>scenario</code> once" in api   # a docstring, rendered


def test_executed_notebook_page_shows_its_figures_and_checks(built_site):
    page = (built_site / "notebooks" / "04-the-virtqueue" / "index.html").read_text(
        encoding="utf-8")
    assert "data:image/png;base64" in page
    assert 'require("04.need-event", need_event)' in page    # the public test ran in the build
    for secret in ("require_fresh", "BEGIN QUESTION", "# SOLUTION", "busy_device_kicks(5)"):
        assert secret not in page, secret                   # the answer key is not on the site
    assert "busy_kicks = ..." in page
    unexecuted = (built_site / "notebooks" / "05-xen-split-drivers" / "index.html").read_text(
        encoding="utf-8")
    assert "[pass]" not in unexecuted


def test_link_to_a_missing_file_is_an_error_and_other_files_become_paths():
    site = _site()
    errors: list[str] = []
    source = ROOT / "docs" / "emulation.md"
    text = ("[gone](../labs/nope/README.md) [lab](../labs/03-emulation/README.md#questions) "
            "[scenario](../examples/netperf-rr.toml) `[not a link](nowhere.md)`\n"
            "```\n[in code](nowhere.md)\n```\n")
    pages = site.page_map(sorted((ROOT / "notebooks").glob("*.md")))
    out = site.rewrite_links(text, source, Path("emulation.md"), pages, errors)
    assert errors == ["docs/emulation.md: link to a missing file: ../labs/nope/README.md"]
    assert "[lab](labs/03-emulation.md#questions)" in out
    assert "scenario (`examples/netperf-rr.toml`)" in out
    assert "[in code](nowhere.md)" in out


def test_mkdocs_with_the_sites_settings_rejects_a_broken_link(tmp_path):
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[other](other.md#no-such-heading)\n")
    (docs / "other.md").write_text("# Other\n\n[missing](missing.md)\n")
    mini = {"site_name": "t", "strict": config["strict"], "validation": config["validation"],
            "nav": ["index.md", "other.md"]}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(mini))
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "missing.md" in done.stderr and "no-such-heading" in done.stderr
