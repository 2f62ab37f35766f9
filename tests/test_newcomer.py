"""The first five minutes: the README's commands, in order, as a newcomer types them.

Every ``sh`` block of README.md is run line by line in a scratch directory (so that the files
they write -- result.json, s.csv, sweep.png -- stay out of the tree), in a shell where the
README's own activation line has run, and each must exit 0. Commands are run as printed; the
few that cannot run here are skipped with the reason (a Dask cluster, root, the test suite
itself, a long validation covered by its own tests).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACTIVATE = ROOT / ".venv" / "bin" / "activate"

#: Commands not run here, by a pattern of their text, with the reason.
SKIPS = (
    (r"^python3 dev\.py test", "the test suite itself (this test is part of it)"),
    (r"--scheduler tcp://", "needs a running Dask cluster (tests/test_dask.py starts one)"),
    (r"^virtlab demo ", "needs Linux namespaces/cgroups and may need root (tests/linux/)"),
    (r"^virtlab calibrate", "measures this machine with real namespaces (tests/linux/)"),
    (r"^virtlab validate$", "minutes of simulation; tests/test_validation.py runs its fast "
                            "form"),
)


def readme_commands() -> list[str]:
    """Every command line of the README's ``sh`` blocks, comments removed, in order."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIPS:
        if re.search(pattern, command):
            return reason
    return None


def test_the_readme_lists_the_commands_this_test_runs():
    commands = readme_commands()
    assert commands[0] == "python3 dev.py run"
    assert any(c.startswith("source .venv/bin/activate") for c in commands)
    assert sum(c.startswith("virtlab ") for c in commands) >= 20
    # Everything skipped is skipped for a stated reason, and most commands do run.
    assert sum(skip_reason(c) is None for c in commands) >= len(commands) - 6


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A directory that looks like the repository to the commands (examples/, .venv, dev.py)."""
    if not ACTIVATE.exists():
        pytest.skip(f"{ACTIVATE} is missing: run 'python3 dev.py run' first (the README's "
                    f"first step creates it)")
    for name in ("examples", ".venv", "dev.py"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def _shell(command: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "COLUMNS")}
    env["VIRTLAB_STORE"] = str(cwd / "store")
    env["PATH"] = "/usr/bin:/bin"  # a newcomer's PATH: no virtlab until the README says so
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_without_the_activation_line_virtlab_is_not_found(scratch):
    """The README's activation line is what makes the tour work (not something else)."""
    assert _shell("virtlab profiles", scratch).returncode == 127
    assert _shell("source .venv/bin/activate && virtlab profiles", scratch).returncode == 0
    proc = _shell("python3 dev.py virtlab profiles", scratch)
    assert proc.returncode == 0 and "testbed-2003" in proc.stdout
    proc = _shell("SHELL=/bin/sh python3 dev.py shell -c 'command -v virtlab'", scratch)
    assert proc.returncode == 0 and proc.stdout.strip().endswith(".venv/bin/virtlab")


@pytest.mark.slow
def test_every_readme_command_exits_0_in_order(scratch):
    failures, ran, skipped = [], 0, []
    activated = False
    for command in readme_commands():
        reason = skip_reason(command)
        if reason is not None:
            skipped.append((command, reason))
            continue
        if command.startswith("source "):
            activated = True
        # Each line runs in a fresh shell; once the README has activated, later lines see it.
        line = f"source {shlex.quote(str(scratch / '.venv/bin/activate'))} && {command}" \
            if activated and not command.startswith("source ") else command
        proc = _shell(line, scratch)
        ran += 1
        if proc.returncode != 0:
            failures.append(f"{command!r} exited {proc.returncode}: "
                            f"{(proc.stderr or proc.stdout).strip()[-300:]}")
    assert not failures, "\n".join(failures)
    assert ran >= 25
    assert (scratch / "result.json").stat().st_size > 0 and (scratch / "sweep.png").exists()
    assert len(skipped) <= 6, skipped


def test_the_first_screen_of_compare_is_the_table(scratch):
    """On an 80x24 terminal, the first lines answer: headings, columns, a row per approach."""
    proc = _shell("source .venv/bin/activate && COLUMNS=80 virtlab compare --duration 5ms "
                  "--warmup 1ms -r 2", scratch)
    assert proc.returncode == 0, proc.stderr
    screen = proc.stdout.splitlines()[:24]
    assert screen[0] == "== net.rr (rr) =="
    assert screen[1].split()[:4] == ["approach", "req/s", "mean", "µs"]
    for approach in ("native", "container", "passthrough", "paravirtual", "emulated"):
        assert any(line.startswith(approach) for line in screen[2:7])
    assert "== disk.fio (block) ==" in screen
    table = proc.stdout.split("\n\nDisk limits")[0]
    assert max(map(len, table.splitlines())) <= 80
    assert "narrow terminal" in table  # and it says what it left out
    assert "effective parameters" not in proc.stdout
