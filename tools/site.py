#!/usr/bin/env python3
"""Build the documentation site: ``python tools/site.py build [--no-execute]``.

Stages the site's sources into ``build/site-src`` and runs ``mkdocs build --strict`` (config:
``mkdocs.yml``; output: ``build/site``):

* ``docs/*.md`` as they are (``docs/README.md``, the repository's index of docs/, is replaced
  by the site's ``index.md``); the README as ``overview.md``; ``labs/README.md`` as
  ``labs/index.md`` and each ``labs/NN-topic/README.md`` as ``labs/NN-topic.md``;
* each ``notebooks/NN-*.md`` (MyST) as ``notebooks/NN-*.ipynb``, executed with nbclient so
  the pages show their outputs and figures (``--no-execute`` skips that).

Relative links are rewritten to where their targets are staged. A link to a repository file
that is not a page (a scenario file, a check script) becomes the file's path in code; a link
to a file that does not exist fails the build, as does anything ``mkdocs --strict`` rejects
(a page missing from the navigation, a broken anchor, an API reference that does not resolve).
Exit status 0 on success, 1 with the reasons otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "site-src"
SITE = ROOT / "build" / "site"
_LINK = re.compile(r"(?<!!)\[([^\[\]]+)\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)
_CODE_SPAN = re.compile(r"(`[^`\n]*`)")


def page_map(notebooks: list[Path]) -> dict[Path, Path]:
    """Repository file -> staged path (relative to the stage) of every page of the site."""
    pages = {p: Path(p.name) for p in sorted((ROOT / "docs").glob("*.md"))
             if p.name != "README.md"}
    pages[ROOT / "README.md"] = Path("overview.md")
    pages[ROOT / "labs" / "README.md"] = Path("labs/index.md")
    for readme in sorted((ROOT / "labs").glob("*/README.md")):
        pages[readme] = Path("labs") / f"{readme.parent.name}.md"
    for notebook in notebooks:
        pages[notebook] = Path("notebooks") / f"{notebook.stem}.ipynb"
    # Links to the docs folder's own index go to the site's home page.
    pages[ROOT / "docs" / "README.md"] = Path("index.md")
    return pages


def rewrite_links(text: str, source: Path, staged: Path, pages: dict[Path, Path],
                  errors: list[str]) -> str:
    """``text`` of ``source`` with its relative links pointing at staged pages (outside code)."""

    def fix(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            return match.group(0)          # a URL or an anchor on the same page
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        if not resolved.exists():
            errors.append(f"{source.relative_to(ROOT)}: link to a missing file: {target}")
            return match.group(0)
        if resolved.is_dir() and (resolved / "README.md") in pages:
            resolved = resolved / "README.md"
        if resolved in pages:
            relative = os.path.relpath(pages[resolved], staged.parent)
            return f"[{label}]({relative}{'#' + anchor if anchor else ''})"
        where = resolved.relative_to(ROOT).as_posix()
        return f"{label} (`{where}`)" if label.strip("`") != where else f"`{where}`"

    parts = _FENCE.split(text)
    # split with one group keeps the fences: [text, fence, inside, fence, text, ...]
    out, inside = [], False
    for part in parts:
        if part in ("```", "~~~"):
            inside = not inside
            out.append(part)
        else:
            out.append(part if inside else _outside_code_spans(part, fix))
    return "".join(out)


def _outside_code_spans(text: str, fix) -> str:
    """Apply ``fix`` to the links of ``text`` that do not start inside an inline code span."""
    spans = [m.span() for m in _CODE_SPAN.finditer(text)]

    def guarded(match: re.Match[str]) -> str:
        inside = any(a <= match.start() < b for a, b in spans)
        return match.group(0) if inside else fix(match)

    return _LINK.sub(guarded, text)


def stage(execute: bool, only: list[str] | None) -> list[str]:
    """Write the staged sources; return the errors found (empty when all is well)."""
    import jupytext

    notebooks = sorted((ROOT / "notebooks").glob("*.md"))
    if only:
        notebooks = [n for n in notebooks if any(n.name.startswith(o) for o in only)]
    pages = page_map(sorted((ROOT / "notebooks").glob("*.md")))
    if STAGE.exists():
        shutil.rmtree(STAGE)
    errors: list[str] = []
    for source, staged in pages.items():
        target = STAGE / staged
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".md" and staged.suffix == ".md":
            if source == ROOT / "docs" / "README.md":
                continue
            text = source.read_text(encoding="utf-8")
            target.write_text(rewrite_links(text, source, staged, pages, errors),
                              encoding="utf-8")
    for notebook in sorted((ROOT / "notebooks").glob("*.md")):
        staged = pages[notebook]
        nb = jupytext.read(notebook)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = rewrite_links(cell.source, notebook, staged, pages, errors)
        if execute and notebook in notebooks:
            print(f"site: executing {notebook.name}", file=sys.stderr, flush=True)
            errors.extend(_execute(nb, notebook))
        _course().reading_version(nb)   # no solutions, hidden tests or otter markers
        jupytext.write(nb, STAGE / staged)
    return errors


def _course():
    spec = importlib.util.spec_from_file_location("course", ROOT / "tools" / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _execute(nb, path: Path) -> list[str]:
    import nbclient

    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend embeds the figures
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        return [f"{path.name}: a cell failed: {str(err).strip().splitlines()[-1]}"]
    return []


def build(execute: bool = True, only: list[str] | None = None) -> int:
    """Stage and build; print the reasons and return 1 on any error."""
    errors = stage(execute, only)
    if errors:
        for line in errors:
            print(f"site: error: {line}", file=sys.stderr)
        return 1
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
                           "--config-file", str(ROOT / "mkdocs.yml")], cwd=ROOT,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    if done.returncode != 0:
        print("site: error: mkdocs build --strict failed (see above)", file=sys.stderr)
        return 1
    print(f"site: built {SITE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run ``build``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="stage and build the site into build/site")
    b.add_argument("--no-execute", action="store_true",
                   help="render the notebooks without running them (no outputs)")
    b.add_argument("--only", nargs="*", metavar="NN",
                   help="execute only the notebooks whose names start with these prefixes")
    args = parser.parse_args(argv)
    return build(execute=not args.no_execute, only=args.only)


if __name__ == "__main__":
    sys.exit(main())
