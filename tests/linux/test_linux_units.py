"""Tier 1: explanations, cgroup detection and knobs, the profile file, the CLI wiring.

Everything here uses synthetic inputs (facts, mountinfo text, temporary directories standing in
for cgroup directories), so it runs on any OS without privilege.
"""

from __future__ import annotations

import argparse
import errno
import tomllib
from pathlib import Path

import pytest

from virtlab.errors import PreflightError
from virtlab.linux import cgroups, channel, preflight
from virtlab.linux.calibrate import Calibration, Spread, profile_values
from virtlab.linux.commands import add_commands
from virtlab.linux.container import CONTAINER_FLAGS
from virtlab.linux.libc import CLONE_NEWTIME, CLONE_NEWUSER
from virtlab.linux.profile import ALLOWED_KEYS, render_profile, validate_profile
from virtlab.linux.text import table

USERNS = CONTAINER_FLAGS | CLONE_NEWUSER


def _explain(err: int, flags: int = CONTAINER_FLAGS, stage: str = "unshare",
             **facts: object) -> str:
    base: dict[str, object] = {"euid": 0, "cap_sys_admin": True}
    base.update(facts)
    facts_obj = preflight.Facts(**base)  # type: ignore[arg-type]
    return preflight.explain(OSError(err, "x"), flags, stage, facts_obj)


# -- explanations: one per cause in namespaces.md 3.3 --------------------------------------------
def test_not_root_suggests_rootless_mode() -> None:
    text = _explain(errno.EPERM, euid=1000)
    assert "not root" in text and "rootless" in text


def test_seccomp_is_named_with_the_docker_fix() -> None:
    text = _explain(errno.EPERM, seccomp=2)
    assert "seccomp" in text and "--privileged" in text


def test_root_without_cap_sys_admin() -> None:
    assert "CAP_SYS_ADMIN" in _explain(errno.EPERM, cap_sys_admin=False)


def test_userns_disabled_by_debian_sysctl() -> None:
    text = _explain(errno.EPERM, USERNS, euid=1000, unprivileged_userns_clone=0)
    assert "unprivileged_userns_clone" in text and "sysctl" in text


def test_userns_restricted_by_apparmor() -> None:
    text = _explain(errno.EPERM, USERNS, "uid/gid maps", euid=1000, apparmor_restrict_userns=1)
    assert "apparmor_restrict_unprivileged_userns" in text


def test_chroot_blocks_user_namespaces() -> None:
    assert "chroot" in _explain(errno.EPERM, USERNS, euid=1000, chrooted=True)


def test_non_dumpable_after_setuid() -> None:
    text = _explain(errno.EACCES, USERNS, "uid/gid maps", euid=65534)
    assert "dumpable" in text and "PR_SET_DUMPABLE" in text


def test_masked_proc_in_rootless_mode() -> None:
    text = _explain(errno.EPERM, USERNS, "mount /proc", euid=1000, masked_proc=["/proc/kcore"])
    assert "too revealing" in text and "/proc/kcore" in text


def test_namespace_limit() -> None:
    assert "max_" in _explain(errno.ENOSPC, USERNS) and "sysctl" in _explain(errno.ENOSPC, USERNS)


def test_threads_with_clone_newuser() -> None:
    assert "single-threaded" in _explain(errno.EINVAL, USERNS, threads=2)


def test_kernel_without_a_namespace_kind() -> None:
    text = _explain(errno.EINVAL, CONTAINER_FLAGS | CLONE_NEWTIME, missing_kinds=["time"])
    assert "without time namespaces" in text


def test_unknown_cause_still_names_the_step() -> None:
    assert "'mount /proc' step" in _explain(errno.EIO, stage="mount /proc")


# -- cgroups ------------------------------------------------------------------------------------
HYBRID = """\
30 22 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 22 0:27 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
32 22 0:28 / /sys/fs/cgroup/cpuacct rw,nosuid - cgroup cgroup rw,cpuacct
"""


def test_hybrid_layout_picks_the_v1_cpu_hierarchy(tmp_path: Path) -> None:
    layout = cgroups.detect(HYBRID)  # the cgroup2 mount point does not exist here: no cpu
    assert layout == cgroups.CgroupLayout(1, Path("/sys/fs/cgroup/cpu"))
    assert "cpu.shares" in layout.describe()


def _v2_root(tmp_path: Path, controllers: str, subtree: str) -> str:
    (tmp_path / "cgroup.controllers").write_text(controllers)
    (tmp_path / "cgroup.subtree_control").write_text(subtree)
    return f"40 22 0:30 / {tmp_path} rw - cgroup2 cgroup2 rw\n"


def test_v2_with_cpu_enabled(tmp_path: Path) -> None:
    layout = cgroups.detect(_v2_root(tmp_path, "cpuset cpu io memory", "cpu memory"))
    assert layout == cgroups.CgroupLayout(2, tmp_path)


def test_v2_without_cpu_in_subtree_control_says_how_to_enable(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match=r"\+cpu"):
        cgroups.detect(_v2_root(tmp_path, "cpu io", "io"))


def test_no_cpu_controller_anywhere(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match="no CPU cgroup controller"):
        cgroups.detect(_v2_root(tmp_path, "hugetlb", ""))


def test_v1_knobs(tmp_path: Path) -> None:
    group = cgroups.CpuGroup(tmp_path, 1)
    assert group.set_weight(300) == "cpu.shares = 3072"
    group.set_quota(20_000, 100_000)
    assert (tmp_path / "cpu.cfs_quota_us").read_text() == "20000"
    assert (tmp_path / "cpu.cfs_period_us").read_text() == "100000"
    (tmp_path / "cpu.stat").write_text(
        "nr_periods 30\nnr_throttled 29\nthrottled_time 2400000000\n")
    assert group.throttling() == {"nr_periods": 30, "nr_throttled": 29, "throttled_us": 2_400_000}


def test_v2_knobs(tmp_path: Path) -> None:
    group = cgroups.CpuGroup(tmp_path, 2)
    assert group.set_weight(300) == "cpu.weight = 300"
    assert group.set_quota(20_000, 100_000) == "cpu.max = 20000 100000"
    (tmp_path / "cpu.stat").write_text("usage_usec 5\nnr_periods 3\nnr_throttled 3\n"
                                       "throttled_usec 240000\n")
    assert group.throttling()["throttled_us"] == 240_000


def test_stale_groups_of_dead_owners_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / "virtlab-999999999-abcdef"  # no such PID can exist
    (dead / "a").mkdir(parents=True)
    other = tmp_path / "someone-elses-group"
    other.mkdir()
    assert cgroups.remove_stale(cgroups.CgroupLayout(1, tmp_path)) == [dead.name]
    assert not dead.exists() and other.exists()


# -- the profile file ---------------------------------------------------------------------------
def _calibration(syscall_extra: float, veth: bool) -> Calibration:
    calib = Calibration("root", elapsed_s=3.0)

    def put(key: str, value: float) -> None:
        calib.spreads[key] = Spread.of([value * 0.9, value, value * 1.1])

    put("syscall_host_us", 0.15)
    put("syscall_extra_us", syscall_extra)
    put("netns_create_us", 400.0)
    put("startup_us", 2500.0)
    put("loopback_rtt_host_us", 20.0)
    if veth:
        put("veth_rtt_extra_us", 0.4)
    else:
        calib.skipped["veth"] = "not measured: --no-veth"
    return calib


def test_profile_has_exactly_the_allowed_keys() -> None:
    data = tomllib.loads(render_profile(_calibration(0.01, veth=True), "box", "2025-01-01"))
    assert validate_profile(data) == []
    assert set(data) == set(ALLOWED_KEYS)
    assert data["profile"] == {"name": "calibrated-box", "extends": "modern",
                               "description": "Measured by virtlab calibrate on box at 2025-01-01"}
    assert data["host"]["syscall_us"] == pytest.approx(0.15)
    assert data["container"]["syscall_extra_us"] == pytest.approx(0.01)
    assert data["container"]["veth_hop_us"] == pytest.approx(0.2)  # half the round trip
    assert data["measurements"]["netns_create_us"] == pytest.approx(400.0)


def test_negative_differences_are_clamped_and_said_so() -> None:
    text = render_profile(_calibration(-0.02, veth=True), "box", "now")
    assert tomllib.loads(text)["container"]["syscall_extra_us"] == 0.0
    assert "clamped" in text


def test_without_veth_the_key_is_left_out_and_the_file_says_why() -> None:
    text = render_profile(_calibration(0.01, veth=False), "box", "now")
    assert "veth_hop_us" not in tomllib.loads(text)["container"]
    assert "veth_hop_us is left out" in text


def test_validate_rejects_what_the_loader_would() -> None:
    problems = validate_profile({"profile": {"name": "x"}, "host": {"syscall_us": -1, "cpu": 2},
                                 "extra": {}})
    assert "unknown table [extra]" in problems
    assert "unknown key host.cpu" in problems
    assert "host.syscall_us must be a number >= 0" in problems
    assert "missing profile.extends" in problems


def test_profile_values_clamp_but_keep_the_raw_number() -> None:
    values = profile_values(_calibration(-0.02, veth=False))
    assert values["syscall_extra_us"] == 0.0 and values["syscall_extra_us_raw"] < 0
    assert "veth_hop_us" not in values


def test_spread_quartiles() -> None:
    spread = Spread.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (spread.median, spread.q1, spread.q3, spread.low, spread.high) == (3, 2, 4, 1, 5)
    assert Spread.of([7.0]).text() == "7.00 (IQR 7.00–7.00, n=1)"


# -- CLI wiring, errors across the fork, text ---------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtlab")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.mark.parametrize("argv", [["demo", "namespaces", "--mode", "rootless"],
                                  ["demo", "cgroups", "--seconds", "2", "--weights", "200:100"],
                                  ["doctor"], ["calibrate", "--quick", "-o", "p.toml"]])
def test_every_leaf_has_a_func(argv: list[str]) -> None:
    assert callable(_parser().parse_args(argv).func)


@pytest.mark.parametrize("argv", [["demo"], ["demo", "cgroups", "--weights", "3"],
                                  ["demo", "cgroups", "--quota", "200/100"],
                                  ["demo", "cgroups", "--seconds", "0"],
                                  ["demo", "cgroups", "--case", "no-such-case"],
                                  ["demo", "namespaces", "--mode", "vm"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        _parser().parse_args(argv)
    assert caught.value.code == 2


def test_cgroups_defaults() -> None:
    from virtlab.linux.commands import cgroup_settings

    args = _parser().parse_args(["demo", "cgroups"])
    assert cgroup_settings(args) == (3.0, (300, 100), (20.0, 100.0))
    given = _parser().parse_args(["demo", "cgroups", "--seconds", "2", "--weights", "200:100"])
    assert cgroup_settings(given) == (2.0, (200, 100), (20.0, 100.0))
    cases = _parser().parse_args(["demo", "cgroups", "--case", "quota-1.5-cpus", "--case",
                                  "shares-1-2-5"])
    assert (cases.cases, cases.case) == (False, ["quota-1.5-cpus", "shares-1-2-5"])
    assert str(_parser().parse_args(["calibrate"]).output) == "calibrated-profile.toml"


def test_remote_oserror_comes_back_as_the_same_subclass() -> None:
    try:
        raise PermissionError(errno.EPERM, "Operation not permitted", "CLONE_NEWNET")
    except PermissionError as exc:
        message = channel.error_message(exc, "unshare")
    with pytest.raises(PermissionError) as caught:
        channel.raise_remote(message)
    assert caught.value.filename == "CLONE_NEWNET"
    assert caught.value.stage == "unshare"  # type: ignore[attr-defined]


def test_remote_other_error_keeps_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        message = channel.error_message(exc, "payload")
    with pytest.raises(channel.RemoteError, match="ValueError: boom") as caught:
        channel.raise_remote(message)
    assert any("Traceback" in note for note in caught.value.__notes__)


def test_table_aligns_columns() -> None:
    assert table(("a", "bb"), [("xxx", 1)]).splitlines() == ["a    bb", "---  --", "xxx  1"]
