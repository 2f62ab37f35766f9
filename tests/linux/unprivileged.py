"""Run this checkout's code as an unprivileged user, wherever the checkout sits.

The rootless tests run ``python -m virtlab ...`` as uid 65534 (``setpriv``). That user must be
able to execute an interpreter and read the package and its dependencies. A checkout inside a
folder only its owner may enter (a fresh clone in a ``mktemp -d`` folder, a private home
directory) gives it neither. So, when the direct way does not work, this module *stages* what
the rootless path needs in a world-readable temporary folder:

* the package source (``sim/virtlab``), copied;
* the third-party distributions the CLI's rootless path imports (found by importing it and
  asking :mod:`importlib.metadata` which distributions own the new top-level modules), their
  files hard-linked when possible and copied otherwise;
* an interpreter the user can run: the first of this interpreter, its base interpreter and the
  ``python3`` on ``PATH`` that, run as that user with only the staged folder on ``PYTHONPATH``,
  imports everything the rootless path needs.

If none works, the caller skips with the exact reason (every candidate and its error).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from linux_helpers import SIM, virtlab_env

NOBODY = 65534
# What `python -m virtlab demo|doctor|calibrate` imports on the rootless path. The package
# loads its heavy modules on first use, so the model (SimPy, NumPy) is named explicitly: the
# commands reach it (the scenario machinery, the simulated side of a demo) after start-up.
NEEDED_MODULES = ("virtlab.cli", "virtlab.linux.commands", "virtlab.linux.calibrate",
                  "virtlab.linux.profile", "virtlab.linux.demo_namespaces",
                  "virtlab.linux.demo_cgroups", "virtlab.linux.preflight", "virtlab.config",
                  "virtlab.model", "simpy", "numpy", "tomli_w")
_IMPORT_CHECK = "import " + ", ".join(NEEDED_MODULES)

_FIND_DISTRIBUTION_FILES = f"""
import importlib.metadata as md, json, sys
before = set(sys.modules)
{_IMPORT_CHECK}
tops = {{name.split(".")[0] for name in set(sys.modules) - before}}
owners = md.packages_distributions()
files = []
for dist_name in sorted({{d for top in tops for d in owners.get(top, [])}} - {{"virtlab"}}):
    dist = md.distribution(dist_name)
    for rel in dist.files or []:
        if not str(rel).startswith(".."):  # scripts in bin/ are not needed
            files.append((str(rel), str(dist.locate_file(rel))))
print(json.dumps(files))
"""


@dataclass
class Unprivileged:
    """How to run Python as the unprivileged user: ``command + argv`` with ``env``."""

    command: list[str]
    env: dict[str, str]
    how: str
    stage: Path | None = None
    failures: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)


def drop_prefix() -> list[str] | str:
    """``setpriv`` arguments that drop root to uid 65534 ([] if not root), or why not."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return "setpriv (util-linux) is not installed; cannot drop to uid 65534"
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _trial(command: list[str], env: dict[str, str]) -> str | None:
    """Run the import check as the user; None if it works, else the error's last line."""
    try:
        done = subprocess.run([*command, "-c", _IMPORT_CHECK], capture_output=True, text=True,
                              env=env, cwd="/", timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def _readable_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` if that leaves it readable to everyone, else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(src.stat().st_mode) & stat.S_IROTH:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another filesystem, or links not allowed: copy
    shutil.copy2(src, dst)
    dst.chmod(dst.stat().st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def _stage() -> Path:
    stage = Path(tempfile.mkdtemp(prefix="virtlab-rootless-"))
    package = SIM / "virtlab"
    for src in package.rglob("*"):
        if src.is_file() and "__pycache__" not in src.parts:
            _readable_copy(src, stage / "virtlab" / src.relative_to(package))
    found = subprocess.run([sys.executable, "-c", _FIND_DISTRIBUTION_FILES], capture_output=True,
                           text=True, env=virtlab_env(), timeout=120, check=True)
    for rel, path in json.loads(found.stdout):
        if Path(path).is_file():
            _readable_copy(Path(path), stage / rel)
    for path in [stage, *stage.rglob("*")]:  # every folder enterable, every file readable
        if path.is_dir():
            path.chmod(0o755)
    return stage


def find_unprivileged() -> Unprivileged | str:
    """How to run this checkout's code as the unprivileged user, or why it cannot be done."""
    prefix = drop_prefix()
    if isinstance(prefix, str):
        return prefix
    direct = [*prefix, sys.executable]
    failure = _trial(direct, virtlab_env())
    if failure is None:
        return Unprivileged(direct, virtlab_env(), how=f"{sys.executable}, PYTHONPATH={SIM}")
    failures = [f"{sys.executable} with PYTHONPATH={SIM}: {failure}"]
    stage = _stage()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(stage), PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1")
    candidates = [sys.executable, getattr(sys, "_base_executable", sys.executable),
                  os.path.realpath(sys.executable), shutil.which("python3") or "python3"]
    for python in dict.fromkeys(candidates):
        failure = _trial([*prefix, python], env)
        if failure is None:
            return Unprivileged([*prefix, python], env, stage=stage, failures=failures,
                                how=f"{python}, PYTHONPATH={stage} (staged: the checkout is "
                                    f"not readable to uid {NOBODY})")
        failures.append(f"{python} with the staged PYTHONPATH={stage}: {failure}")
    shutil.rmtree(stage, ignore_errors=True)
    return (f"no interpreter that uid {NOBODY} can run imports the rootless path's modules; "
            "tried " + "; ".join(failures))
