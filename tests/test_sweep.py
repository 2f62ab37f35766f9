"""Sweeps keep every good point when some fail; capacity counts guests under a p99 limit."""

from __future__ import annotations

import dataclasses

import pytest

from virtlab import GuestSpec, RequestResponse, Scenario
from virtlab.cli import main
from virtlab.hardware import HostParams
from virtlab.sweep import capacity, sweep, with_guest_copies

SHORT = dict(duration_us=4_000.0, warmup_us=1_000.0)


def _scenario() -> Scenario:
    return Scenario(**SHORT, guests=(GuestSpec(name="g", approach="native", workloads=(
        RequestResponse(in_flight=2),)),))


def test_a_failed_point_does_not_lose_the_others():
    points = sweep(_scenario(), {"host.cores": [2, 0, 4]}, ("native", "container"),
                   replications=1)
    assert [p.values["host.cores"] for p in points] == [2, 0, 4]
    good = [p for p in points if p.error is None]
    assert len(good) == 2 and all(len(p.comparison.entries) == 2 for p in good)
    (bad,) = [p for p in points if p.error is not None]
    assert "host.cores: must be in [1, 1024]" in bad.error


def test_sweep_points_differ_where_the_factor_matters():
    points = sweep(_scenario(), {"guests[0].workloads[0].in_flight": [1, 8]}, replications=1)
    low, high = (p.comparison.entries[0].means["throughput_per_s"] for p in points)
    assert high > low


def test_guest_copies_have_unique_names():
    copies = with_guest_copies(_scenario(), 3)
    assert [g.name for g in copies.guests] == ["g0", "g1", "g2"]


def test_capacity_finds_the_knee_when_cores_run_out():
    scenario = dataclasses.replace(
        _scenario(), host=HostParams(cores=1),
        guests=(GuestSpec(name="web", approach="native", vcpus=1, workloads=(
            RequestResponse(loop="open", rate_per_s=20_000, server_work_us=10.0),)),))
    rows = capacity(scenario, p99_limit_us=200.0, counts=[1, 2, 4], approaches=["native"])
    assert [r.guests for r in rows] == [1, 2, 4]
    assert rows[0].fits and not rows[-1].fits
    assert rows[0].worst_p99_us < rows[-1].worst_p99_us


def test_cli_sweep_reports_failures_and_exits_1(capsys):
    status = main(["sweep", "--vary", "host.cores=2,0", "--duration", "3ms", "--warmup", "1ms",
                   "-r", "1", "--approaches", "native"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAILED: ConfigError: host.cores" in out and "1 point(s) failed" in out


@pytest.mark.parametrize("argv", [["sweep", "--vary", "nonsense"],
                                  ["capacity", "--p99-limit=-3us"],
                                  ["capacity", "--p99-limit", "1ms", "--max-guests", "0"]])
def test_cli_sweep_and_capacity_bad_input(argv, capsys):
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
