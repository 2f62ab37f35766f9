#!/usr/bin/env python3
"""Set up virtlab and run it: the only two commands a new user needs.

    python3 dev.py run    # the main job: compare the five approaches on the default scenario
    python3 dev.py test   # the whole test suite (what CI runs)

and two that put the installed ``virtlab`` in reach:

    python3 dev.py virtlab ARGS...   # any virtlab command, e.g. dev.py virtlab trace
    python3 dev.py shell             # a shell with .venv/bin first on PATH (exit to leave)

All create ``.venv`` next to this file on first use and install virtlab into it (editable,
with the test, notebook, benchmark and docs extras); later calls reinstall only when
``pyproject.toml`` has changed. Extra arguments are passed on:
``python3 dev.py run --seed 7 --json``, ``python3 dev.py test -m "not slow" -x``,
``python3 dev.py shell -c 'virtlab profiles'``.
Instead of ``shell``, ``source .venv/bin/activate`` does the same in the current shell.
Only Python 3.11+ is needed.
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


def activated_environment() -> dict[str, str]:
    """The environment ``source .venv/bin/activate`` gives: ``.venv/bin`` first on PATH."""
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", os.defpath)])
    env.pop("PYTHONHOME", None)
    return env


def _shell(rest: list[str]) -> int:
    """A shell (``$SHELL``, else /bin/sh) in which ``virtlab`` is on PATH."""
    shell = os.environ.get("SHELL") or ("cmd.exe" if os.name == "nt" else "/bin/sh")
    if not rest:
        print(f"dev.py: a shell with {BIN} first on PATH: 'virtlab' is the command; "
              f"'exit' leaves it", flush=True)
    return subprocess.call([shell, *rest], env=activated_environment())


COMMANDS = ("run", "test", "virtlab", "shell")


def main(argv: list[str]) -> int:
    """Dispatch ``run``, ``test``, ``virtlab`` or ``shell``."""
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "shell":
        return _shell(rest)
    if command == "virtlab":
        # In the caller's directory, so that file arguments mean what they say.
        program = BIN / ("virtlab.exe" if os.name == "nt" else "virtlab")
        return subprocess.call([str(program), *rest], env=activated_environment())
    if command == "run":
        cmd = [str(_python()), "-m", "virtlab", "compare", *rest]
    else:
        cmd = [str(_python()), "-m", "pytest", *rest]
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
