#!/usr/bin/env python3
"""Build the course for the browser (JupyterLite): ``python tools/lite.py build``.

    python tools/lite.py build     # -> build/lite: a static site; serve it, open lab/index.html
    python tools/lite.py check     # can the browser version *run* here? (exit 0 yes, 3 no)

``build`` stages the notebooks' student versions (``otter assign`` via ``tools/course.py``:
no solutions, no hidden tests) as ``.ipynb``, each with a first cell that installs virtlab and
otter-grader into the browser's Python with ``%pip``; builds a virtlab wheel; fetches the wheels
of virtlab's and otter-grader's pure-Python dependencies from PyPI; and runs ``jupyter lite
build`` (jupyterlite-core with the Pyodide kernel: the ``docs`` extra) so that the wheels are
served by the site's own package index (piplite) and the kernel never falls back to PyPI at
run time. Publishing is copying ``build/lite`` to any static web server.

Opening it works offline: tests/test_lite.py serves the build on 127.0.0.1 and checks, in
headless Chromium (Debian's chromium and chromium-driver), that the file browser lists every
notebook and that a notebook opens. Running its cells is another matter: the Pyodide kernel
needs a Pyodide runtime with WebAssembly builds of virtlab's compiled dependencies (numpy,
pandas). ``check`` says precisely which of them this machine can get from the package
registries the project uses (PyPI via pip, npm); without them, the browser would load
Pyodide's packages from Pyodide's own CDN at run time, which the project's rules exclude, so
the kernel test skips with that reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "lite-src"
OUT = ROOT / "build" / "lite"
#: The wheel platform of the Pyodide release that jupyterlite-pyodide-kernel 0.8 loads
#: (Pyodide 314, CPython 3.14, PEP 783 tag).
WASM_PLATFORM = "pyemscripten_2026_0_wasm32"
WASM_PYTHON = "3.14"
COMPILED_DEPENDENCIES = ("numpy", "pandas")
# otter-grader and those of its requirements that Pyodide does not ship (the student versions
# call grader.check); their own requirements are in Pyodide's package set or unverified (see
# docs/instructor-guide.md).
PURE_DEPENDENCIES = ("simpy", "tomli-w", "otter-grader", "dill", "fica", "ipylab", "jupytext",
                     "nbformat", "python-frontmatter", "python-on-whales")
INSTALL_CELL = ("# In the browser (JupyterLite): install virtlab and otter-grader from this "
                "site's own package\n# index.\n%pip install -q virtlab otter-grader")


def _course():
    spec = importlib.util.spec_from_file_location("course", ROOT / "tools" / "course.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_notebooks(target: Path) -> list[Path]:
    """Write every notebook's *student* version into ``target``, with the install cell first.

    The student versions come from ``otter assign`` (``tools/course.py``): the browser build is
    handed to students, so it carries no solution and no hidden test.
    """
    import nbformat

    target.mkdir(parents=True, exist_ok=True)
    course = _course()
    written = []
    with tempfile.TemporaryDirectory(prefix="virtlab-lite-") as scratch:
        for source in sorted((ROOT / "notebooks").glob("*.md")):
            student, _key, _zip = course.assign_one(source, Path(scratch))
            notebook = nbformat.read(student, as_version=4)
            notebook.cells.insert(0, nbformat.v4.new_code_cell(INSTALL_CELL))
            path = target / f"{source.stem}.ipynb"
            nbformat.write(notebook, path)
            written.append(path)
    return written


def build() -> int:
    """Stage, build the wheel, run ``jupyter lite build``; 0 on success."""
    try:
        import jupyterlite_core  # noqa: F401
        import jupyterlite_pyodide_kernel  # noqa: F401
    except ImportError as err:
        print(f"lite: error: {err.name} is not installed (python3 dev.py installs the docs "
              "extra)", file=sys.stderr)
        return 2
    if STAGE.exists():
        shutil.rmtree(STAGE)
    files, wheels = STAGE / "files", STAGE / "wheels"
    stage_notebooks(files)
    wheels.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(wheels), str(ROOT)], check=True)
    # virtlab's pure-Python dependencies travel with the site; numpy and pandas cannot (see
    # ``check``). The kernel is told not to fall back to PyPI at run time.
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "-d", str(wheels), *PURE_DEPENDENCIES], check=True)
    (STAGE / "jupyter-lite.json").write_text(json.dumps({
        "jupyter-lite-schema-version": 0,
        "jupyter-config-data": {"litePluginSettings": {
            "@jupyterlite/pyodide-kernel-extension:kernel": {"disablePyPIFallback": True}}}}),
        encoding="utf-8")
    built = [str(w) for w in sorted(wheels.glob("*.whl"))]
    done = subprocess.run([sys.executable, "-m", "jupyter", "lite", "build", "--contents",
                           str(files), "--output-dir", str(OUT), "--lite-dir", str(STAGE),
                           *(arg for w in built for arg in ("--piplite-wheels", w))], cwd=STAGE)
    if done.returncode != 0:
        print("lite: error: jupyter lite build failed (see above)", file=sys.stderr)
        return 1
    print(f"lite: built {OUT}; serve it (python -m http.server -d {OUT}) and open lab/index.html")
    return 0


def missing_for_running() -> list[str]:
    """What this machine lacks to *run* the browser build's kernel; empty when nothing is.

    Checked on 2026-12-07: PyPI has no WebAssembly wheel of numpy or pandas for the Pyodide
    ABI the kernel loads (``pip download --platform pyemscripten_2026_0_wasm32`` finds none),
    and the npm registry's ``pyodide`` package (314.0.8, 14 files) is the core runtime only:
    ``pyodide.asm.wasm``, ``python_stdlib.zip`` and ``pyodide-lock.json``, whose numpy, pandas
    and micropip wheels are not in the package but fetched from Pyodide's CDN.
    """
    missing = []
    with tempfile.TemporaryDirectory() as scratch:
        for package in COMPILED_DEPENDENCIES:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary=:all:", "--platform", WASM_PLATFORM, "--python-version",
                 WASM_PYTHON, "--implementation", "cp", "-d", scratch, package],
                capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                missing.append(f"no WebAssembly wheel of {package} for {WASM_PLATFORM} "
                               f"(Python {WASM_PYTHON}) on the package index pip uses")
    if chromium() is None or shutil.which("chromedriver") is None:
        missing.append("no headless Chromium and ChromeDriver (Debian: apt-get install "
                       "chromium chromium-driver)")
    missing.append("no complete Pyodide distribution in a registry: npm's pyodide package is "
                   "the core runtime without the numpy, pandas and micropip wheels its "
                   "pyodide-lock.json names, so the kernel would load them from Pyodide's CDN "
                   "at run time, which the project excludes")
    return missing


def chromium() -> str | None:
    """The path of a Chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run ``build`` or ``check``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the JupyterLite site into build/lite")
    sub.add_parser("check", help="say what running it in a browser here would still need")
    args = parser.parse_args(argv)
    if args.command == "build":
        return build()
    missing = missing_for_running()
    for line in missing:
        print(f"lite: missing: {line}")
    if not missing:
        print("lite: everything needed to run the browser build is here")
    return 3 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
