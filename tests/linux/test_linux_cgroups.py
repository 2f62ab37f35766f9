"""Tier 3 (root): real CPU cgroups, the shares the kernel really gives, and guaranteed cleanup.

The expected values are the scheduler's definitions, not golden numbers: two always-runnable
groups with weights w_a and w_b on one CPU get w_a/(w_a+w_b) of it; a quota q per period p
caps a busy group at q/p. The tolerances are for a short run on a loaded 2-core machine:
±7 points for the weights, ±3 for the quota.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
from linux_helpers import IS_LINUX, read_until, skip_unless_root, start_cli

from virtlab.errors import PreflightError
from virtlab.linux import cgroups, demo_cgroups, libc
from virtlab.linux.container import CONTAINER_FLAGS, Container, ContainerSpec, Inside

pytestmark = [pytest.mark.linux,
              pytest.mark.skipif(not IS_LINUX, reason="needs Linux cgroups")]

STARTUP_DEADLINE_S = 120.0  # a demo in a fresh interpreter reaching a given step, loaded machine
EXIT_DEADLINE_S = 90.0  # from the signal to the exit status (cleanup included), loaded machine


@pytest.fixture
def layout() -> cgroups.CgroupLayout:
    skip_unless_root()
    try:
        return cgroups.detect()
    except PreflightError as exc:
        pytest.skip(reason=str(exc))


def test_weights_and_quota_give_the_expected_shares(layout: cgroups.CgroupLayout,
                                                    no_leaks: object) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip(reason="needs 2 CPUs to run both experiments at once")
    lines: list[str] = []
    result = demo_cgroups.run_demo(seconds=2.0, out=lines.append)
    # The containers run under the session's parent group weighted 10x the default, so CPU-bound
    # neighbours elsewhere on the machine take little from them (checked on a 2-core machine
    # with two `while True: pass` processes beside the test). The margins are for that case;
    # equal weights (0.5) or no quota (1.0) would still fall far outside them.
    parent_weight = demo_cgroups.PARENT_WEIGHT if layout.version == 2 else \
        round(demo_cgroups.PARENT_WEIGHT * 1024 / 100)
    assert any(f"= {parent_weight}" in line for line in lines if "parent" in line)
    assert result.share_a == pytest.approx(0.75, abs=0.07)
    assert result.share_b == pytest.approx(0.25, abs=0.07)
    assert result.share_q == pytest.approx(0.20, abs=0.03)
    assert result.nr_periods >= 15
    assert result.nr_throttled >= 0.8 * result.nr_periods  # throttled (almost) every period
    assert result.leftovers == []
    assert any("leftover groups: none" in line for line in lines)


def test_the_group_holds_the_container_and_is_removed(layout: cgroups.CgroupLayout,
                                                      no_leaks: object) -> None:
    def payload(inside: Inside) -> str:
        with open("/proc/self/cgroup", encoding="ascii") as handle:
            inside.send("in", cgroup=handle.read())
        inside.recv(timeout_s=10)
        return "done"

    with cgroups.CgroupSession(layout) as session:
        group = session.group("t")
        spec = ContainerSpec(flags=CONTAINER_FLAGS | libc.CLONE_NEWCGROUP,
                             cgroup_procs=(group.procs_file,))
        with Container(spec, payload) as ctr:
            inside = ctr.wait_for("in")["cgroup"]
            assert ctr.pid1 in group.pids()
            assert ctr.launcher_pid in group.pids()  # it joined itself before forking PID 1
            host_view = demo_cgroups.cpu_cgroup(ctr.pid1)
            ctr.send(go=True)
            ctr.result()
        parent = session.parent
    assert host_view.endswith(f"/{parent.name}/t")
    assert ":/\n" in inside or inside.endswith(":/")  # the cgroup namespace hides the path
    assert not parent.exists()


def test_a_stale_group_from_a_killed_run_is_removed(layout: cgroups.CgroupLayout,
                                                    no_leaks: object) -> None:
    with open("/proc/sys/kernel/pid_max", encoding="ascii") as handle:
        dead = int(handle.read()) - 1
    try:
        os.kill(dead, 0)
        pytest.skip(reason=f"PID {dead} exists; cannot fake a dead owner")
    except ProcessLookupError:
        pass
    stale = layout.mountpoint / f"virtlab-{dead}-0badc0"
    stale.mkdir()
    try:
        with cgroups.CgroupSession(layout):
            assert not stale.exists()
    finally:
        if stale.exists():
            stale.rmdir()


@contextlib.contextmanager
def _start_demo(seconds: str) -> Iterator[subprocess.Popen[bytes]]:
    # -u: unbuffered, so each line arrives as it is printed
    proc = start_cli("demo", "cgroups", "--seconds", seconds, stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_demo_removes_everything(layout: cgroups.CgroupLayout, sig: int,
                                                  no_leaks: object) -> None:
    with _start_demo("30") as proc:
        # Printed once every container reported "spinning" from inside its group. The deadlines
        # are for a loaded machine (a fresh interpreter importing the package under load can
        # take many seconds); nothing here waits longer than it must.
        read_until(proc, "Measure CPU time", timeout_s=STARTUP_DEADLINE_S)
        os.killpg(proc.pid, sig)  # what Ctrl-C does: the whole foreground process group
        rest, _ = proc.communicate(timeout=EXIT_DEADLINE_S)
        assert proc.returncode == 128 + sig, rest  # 130 for SIGINT, 143 for SIGTERM
        assert f"interrupted by {signal.Signals(sig).name}".encode() in rest
        assert b"no process, cgroup or network interface this run created is left" in rest
