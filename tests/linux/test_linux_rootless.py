"""Tier 3: the rootless path, run as an unprivileged user.

Two ways to become unprivileged, because they differ in one trap (namespaces.md 3.5):

* ``setpriv --reuid=65534 ... python`` execs, which resets the "dumpable" flag: the realistic
  case of a student's own account.
* ``os.setuid(65534)`` inside a forked child does not exec, so the process stays non-dumpable and
  writing its own ``uid_map`` fails with ``EACCES``, unless it calls ``prctl(PR_SET_DUMPABLE, 1)``.

When the test process is not root, the setpriv tests simply run as the current user. When the
checkout is not readable to uid 65534 (a clone inside a private folder), what the rootless path
needs is staged in a world-readable temporary folder first (see ``unprivileged.py``), or the
tests skip naming every interpreter tried and why it failed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from linux_helpers import IS_LINUX, skip_unless_linux, skip_unless_root
from unprivileged import NOBODY, Unprivileged, find_unprivileged

from virtlab.linux import libc, preflight, procs
from virtlab.linux.container import ContainerSpec, run_container

pytestmark = [pytest.mark.linux,
              pytest.mark.skipif(not IS_LINUX, reason="needs Linux namespaces")]



@pytest.fixture(scope="module")
def nobody() -> Iterator[Unprivileged]:
    """How to run this checkout as uid 65534 (staged if the checkout is private), or skip."""
    skip_unless_linux()
    found = find_unprivileged()
    if isinstance(found, str):
        pytest.skip(reason=found)
    yield found
    found.cleanup()


def _unprivileged(nobody: Unprivileged, *argv: str, timeout: float = 120.0,
                  cwd: str = "/") -> subprocess.CompletedProcess[str]:
    """Run ``python ARGV`` as uid 65534 (via setpriv) if we are root, else as ourselves."""
    return subprocess.run([*nobody.command, *argv], capture_output=True, text=True,
                          env=nobody.env, timeout=timeout, cwd=cwd, check=False)


PROBE = """
import json, os, socket
from virtlab.linux import netdev
from virtlab.linux.container import ContainerSpec, run_container

def look(_):
    return {"uid": os.getuid(), "pid": os.getpid(), "hostname": socket.gethostname(),
            "links": [str(link) for link in netdev.links()],
            "proc": sorted(int(e) for e in os.listdir("/proc") if e.isdigit())}

try:
    inside = run_container(ContainerSpec(rootless=True, hostname="rootless"), look)
    print(json.dumps({"outer": os.getuid(), "inside": inside}))
except OSError as exc:
    print(json.dumps({"outer": os.getuid(), "errno": exc.errno, "error": str(exc)}))
"""


def test_rootless_container_as_an_ordinary_user(nobody: Unprivileged,
                                                 no_leaks: object) -> None:
    result = _unprivileged(nobody, "-c", PROBE)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    if "errno" in seen:
        pytest.skip(reason=f"user namespaces refused for uid {seen['outer']}: {seen['error']}")
    assert seen["outer"] != 0
    assert seen["inside"] == {"uid": 0, "pid": 1, "hostname": "rootless", "links": ["lo UP"],
                              "proc": [1]}


def test_demo_and_doctor_as_an_ordinary_user(nobody: Unprivileged,
                                             no_leaks: object) -> None:
    demo = _unprivileged(nobody, "-m", "virtlab", "demo", "namespaces")
    if demo.returncode == 2:
        pytest.skip(reason=f"rootless mode cannot run here: {demo.stderr.strip()}")
    assert demo.returncode == 0, demo.stderr
    assert "Mode: rootless" in demo.stdout
    assert "CLONE_NEWUSER" in demo.stdout
    doctor = _unprivileged(nobody, "-m", "virtlab", "doctor")
    assert doctor.returncode == 0, doctor.stderr
    assert "[FAIL] root container: you are not root" in doctor.stdout
    assert "[ok  ] rootless container" in doctor.stdout


def test_cgroups_demo_as_an_ordinary_user_exits_2_with_a_reason(
        nobody: Unprivileged) -> None:
    result = _unprivileged(nobody, "-m", "virtlab", "demo", "cgroups", "--seconds", "1")
    assert result.returncode == 2
    assert "needs root" in result.stderr


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory uid 65534 can write to (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="virtlab-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def test_rootless_calibrate_leaves_veth_out_and_says_why(nobody: Unprivileged, shared_dir: Path,
                                                         no_leaks: object) -> None:
    result = _unprivileged(nobody, "-m", "virtlab", "calibrate", "--quick", "-o", "p.toml",
                           cwd=str(shared_dir), timeout=120)
    if result.returncode == 2:
        pytest.skip(reason=f"rootless mode cannot run here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    text = (shared_dir / "p.toml").read_text()
    data = tomllib.loads(text)
    assert data["measurements"]["mode"] == "rootless"
    assert "veth_hop_us" not in data["container"]
    assert "needs root" in text


def _as_nobody(work: Callable[[], Any], dumpable: bool) -> Any:
    """Run ``work`` in a forked child that dropped to uid 65534 with setuid() (no exec)."""
    skip_unless_root()

    def body() -> Any:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        if dumpable:
            libc.prctl(libc.PR_SET_DUMPABLE, 1)
        return work()

    return procs.run_forked(body, timeout_s=20)


def _try_container(rootless: bool) -> dict[str, Any]:
    try:
        return {"pid": run_container(ContainerSpec(rootless=rootless), lambda _: os.getpid())}
    except OSError as exc:
        flags = ContainerSpec(rootless=rootless).unshare_flags
        stage = getattr(exc, "stage", "unshare")
        return {"errno": exc.errno, "stage": stage,
                "why": preflight.explain(exc, flags, stage)}


def test_setuid_then_dumpable_fix_then_rootless_works(no_leaks: object) -> None:
    seen = _as_nobody(lambda: _try_container(rootless=True), dumpable=True)
    if "errno" in seen:
        pytest.skip(reason=f"user namespaces refused for uid {NOBODY}: {seen['why']}")
    assert seen == {"pid": 1}


def test_setuid_without_dumpable_fix_gives_eacces_and_says_so(no_leaks: object) -> None:
    seen = _as_nobody(lambda: _try_container(rootless=True), dumpable=False)
    if seen.get("errno") == errno.EPERM and seen["stage"] == "unshare":
        pytest.skip(reason=f"user namespaces refused for uid {NOBODY}: {seen['why']}")
    assert seen["errno"] == errno.EACCES
    assert seen["stage"] == "uid/gid maps"
    assert "dumpable" in seen["why"]


def test_unprivileged_root_mode_is_eperm_and_suggests_rootless(no_leaks: object) -> None:
    seen = _as_nobody(lambda: _try_container(rootless=False), dumpable=True)
    assert seen["errno"] == errno.EPERM
    assert seen["stage"] == "unshare"
    assert "not root" in seen["why"] and "rootless" in seen["why"]
