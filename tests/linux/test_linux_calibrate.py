"""Tier 3: ``virtlab calibrate --quick`` writes a well-formed profile the simulator loads.

The checks are structural and physical, not golden numbers: the file parses, has exactly the
allowed keys, the costs are non-negative and of a plausible size, the namespace costs are in the
order every kernel shows (a network namespace costs far more than a UTS one), and the simulator's
own profile loader accepts the file and takes its values.
"""

from __future__ import annotations

import os
import signal
import tomllib
from pathlib import Path

import pytest
from linux_helpers import IS_LINUX, Snapshot, assert_no_leaks, run_cli, snapshot

from virtlab.linux.profile import ALLOWED_KEYS, validate_profile

pytestmark = [pytest.mark.linux,
              pytest.mark.skipif(not IS_LINUX, reason="needs Linux namespaces")]


@pytest.fixture(scope="module")
def host_before() -> Snapshot:
    return snapshot()


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory: pytest.TempPathFactory, host_before: Snapshot) -> Path:
    path = tmp_path_factory.mktemp("calibrate") / "calibrated-profile.toml"
    result = run_cli("calibrate", "--quick", "-o", str(path), timeout=180)
    if result.returncode == 2:
        pytest.skip(reason=f"cannot run here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert f"Wrote {path}" in result.stdout
    assert "IQR" in result.stdout  # the spread is printed with every median
    return path


def test_profile_is_well_formed_toml_with_only_allowed_keys(profile_file: Path) -> None:
    data = tomllib.loads(profile_file.read_text())
    assert validate_profile(data) == []
    assert set(data) <= set(ALLOWED_KEYS)
    assert data["profile"]["name"].startswith("calibrated-")
    assert data["profile"]["extends"] == "modern"
    assert "Measured by virtlab calibrate on" in data["profile"]["description"]


def test_profile_values_are_plausible(profile_file: Path) -> None:
    data = tomllib.loads(profile_file.read_text())
    assert 0.01 < data["host"]["syscall_us"] < 20  # tens of ns to a few µs on any machine
    assert data["container"]["syscall_extra_us"] >= 0
    root = os.geteuid() == 0
    assert ("veth_hop_us" in data["container"]) == root
    if root:
        assert 0 <= data["container"]["veth_hop_us"] < 100
    measured = data["measurements"]
    assert measured["netns_create_us"] > measured["utsns_create_us"]
    assert measured["startup_us"] > 0
    assert measured["loopback_rtt_host_us"] > 0 and measured["loopback_rtt_netns_us"] > 0
    assert measured["loopback_bulk_netns_mib_s"] > 0


def test_profile_explains_its_numbers(profile_file: Path) -> None:
    text = profile_file.read_text()
    assert text.startswith("# Calibrated by `virtlab calibrate`")
    if os.geteuid() == 0:
        assert "half the median" in text  # how veth_hop_us was derived
    else:
        assert "veth_hop_us is left out" in text
    assert "IQR" in text


def test_the_simulator_loads_the_profile(profile_file: Path) -> None:
    try:
        from virtlab.config import load_profile
    except ImportError as exc:
        pytest.skip(reason=f"the simulator's profile loader is not available: {exc}")
    data = tomllib.loads(profile_file.read_text())
    tables = load_profile(str(profile_file))
    assert tables["host"]["syscall_us"] == data["host"]["syscall_us"]
    assert tables["container"]["syscall_extra_us"] == data["container"]["syscall_extra_us"]
    assert "measurements" not in tables  # informational, not a model parameter


def test_calibrate_leaves_nothing_behind(profile_file: Path, host_before: Snapshot) -> None:
    assert_no_leaks(host_before)  # processes, mounts, cgroups, the veth pair, SysV segments


def test_interrupting_the_veth_measurement_removes_the_pair(no_leaks: object) -> None:
    """A Ctrl-C in the middle of the veth rounds: the pair, servers and container all go."""
    if os.geteuid() != 0:
        pytest.skip(reason="the veth measurement needs root")
    from virtlab.linux import calibrate

    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)  # a "Ctrl-C" one second in
        with pytest.raises(KeyboardInterrupt):
            calibrate._measure_veth(calibrate.Calibration("root"), calibrate.Plan(rounds=50))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
