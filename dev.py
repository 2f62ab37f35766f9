#!/usr/bin/env python3
"""Set up virtlab and run it: the only two commands a new user needs.

    python3 dev.py run    # the main job: compare the five approaches on the default scenario
    python3 dev.py test   # the whole test suite (what CI runs)

Both create ``.venv`` next to this file on first use and install virtlab into it (editable,
with the test, notebook, benchmark and docs extras); later calls reinstall only when
``pyproject.toml`` has changed. Extra arguments are passed on:
``python3 dev.py run --seed 7 --json``, ``python3 dev.py test -m "not slow" -x``. Only
Python 3.11+ is needed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".virtlab-installed"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def _python() -> Path:
    return BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_environment() -> None:
    """Create the virtual environment and install the package if needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py must run under any python3
        sys.exit(f"virtlab needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not _python().exists():
        print(f"dev.py: creating a virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("dev.py: installing virtlab and its dependencies (first run takes a minute or two)",
          flush=True)
    subprocess.run([str(_python()), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                   check=True)
    subprocess.run([str(_python()), "-m", "pip", "install", "--quiet", "-e",
                    f"{ROOT}[test,notebooks,bench,docs]"], check=True)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    """Dispatch ``run`` or ``test``."""
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "run":
        cmd = [str(_python()), "-m", "virtlab", "compare", *rest]
    else:
        cmd = [str(_python()), "-m", "pytest", *rest]
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
