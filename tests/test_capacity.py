"""Capacity search: galloping + bisection agrees with a linear scan, needs fewer points, and
names the resource that runs out."""

from __future__ import annotations

import json
import math

import pytest

from virtlab import GuestSpec, RequestResponse, Scenario
from virtlab.capacity import _Search, capacity, capacity_search
from virtlab.cli import main
from virtlab.hardware import HostParams


def _web(cores: int, **workload) -> Scenario:
    return Scenario(duration_us=6_000.0, warmup_us=1_000.0, cooldown_us=1_000.0,
                    host=HostParams(cores=cores),
                    guests=(GuestSpec(name="web", approach="native", vcpus=1, workloads=(
                        RequestResponse(loop="open", **workload),)),))


CPU_BOUND = _web(2, rate_per_s=15_000, server_work_us=10.0)
NIC_BOUND = _web(8, rate_per_s=5_000, response_bytes=65_536, server_work_us=2.0)


@pytest.mark.parametrize("max_guests", [1, 2, 3, 7, 8, 13])
def test_the_search_finds_every_threshold_of_a_monotone_oracle(max_guests):
    for threshold in range(max_guests + 1):
        search, asked = _Search(max_guests), []
        while (count := search.next_count()) is not None:
            assert count not in asked, "a count is never evaluated twice"
            asked.append(count)
            search.record(count, count <= threshold)
        assert search.lo == threshold
        assert (search.hi is None) == (threshold == max_guests)
        assert len(asked) <= 2 * math.ceil(math.log2(max_guests)) + 2


def test_search_agrees_with_a_linear_scan_with_fewer_points():
    options = dict(replications=3, max_replications=12, jobs=2)
    scan = capacity(CPU_BOUND, 200.0, list(range(1, 9)), ["native"], **options)
    search = capacity_search(CPU_BOUND, 200.0, 8, ["native"], **options)
    fitting = [r.guests for r in scan if r.fits]
    assert fitting == list(range(1, max(fitting) + 1)), "the scan itself is monotone here"
    assert 1 <= scan.answers["native"].guests < 8, "the limit falls inside the range"
    assert search.answers["native"].guests == scan.answers["native"].guests
    assert search.answers["native"].bounded
    assert len(search) < len(scan)
    # Points the search evaluated are the scan's own (same seeds, same replication rule).
    by_count = {r.guests: r for r in scan}
    for row in search:
        assert row.worst_p99_us == by_count[row.guests].worst_p99_us
        assert row.replications == by_count[row.guests].replications


def test_a_point_near_the_limit_gets_more_replications():
    search = capacity_search(CPU_BOUND, 150.0, 8, ["native"], replications=3,
                             max_replications=12, jobs=2)
    near = min(search, key=lambda r: abs(r.worst_p99_us - 150.0))
    far = min(search, key=lambda r: r.guests)
    assert far.replications == 3 and far.decided
    assert near.replications > 3


def test_the_bottleneck_is_the_cores_or_the_nic_as_the_workload_demands():
    cpu = capacity_search(CPU_BOUND, 200.0, 8, ["native"], jobs=2).answers["native"]
    nic = capacity_search(NIC_BOUND, 500.0, 8, ["native"], jobs=2).answers["native"]
    assert cpu.bottleneck[0] == "host_cores" and cpu.bottleneck[1] > 0.6
    assert nic.bottleneck[0] == "nic_tx" and nic.bottleneck[1] > 0.9
    assert nic.limit_row is not None and nic.limit_row.guests == nic.guests + 1


def test_capacity_result_frame_and_json():
    result = capacity_search(NIC_BOUND, 500.0, 4, ["native", "container"], jobs=2)
    frame = result.to_frame()
    assert set(frame["approach"]) == {"native", "container"}
    assert {"study", "guests", "worst_p99_us", "worst_p99_us_ci", "fits", "decided",
            "bottleneck", "bottleneck_utilisation", "util_nic_tx", "answer_guests"} <= set(
        frame.columns)
    document = result.to_json_dict()
    assert [a["approach"] for a in document["approaches"]] == ["native", "container"]


def test_cli_capacity_json_is_json(tmp_path, capsys):
    status = main(["capacity", "--p99-limit", "200us", "--max-guests", "4", "--approaches",
                   "native", "--set", "host.cores=1", "--duration", "4ms", "--warmup", "1ms",
                   "--store", str(tmp_path), "--json", "--csv", str(tmp_path / "c.csv")])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    document = json.loads(captured.out)
    (native,) = document["approaches"]
    assert native["approach"] == "native" and isinstance(native["guests_fit"], int)
    assert native["bottleneck"] in ("host_cores", "guest_vcpus", "nic_tx", "nic_rx", "disk",
                                    "backend")
    assert (tmp_path / "c.csv").exists()


def test_cli_capacity_warns_when_a_p99_rests_on_few_requests(tmp_path, capsys):
    assert main(["capacity", "--p99-limit", "1s", "--max-guests", "1", "--approaches",
                 "native", "--duration", "0.3ms", "--warmup", "0.1ms", "-r", "2",
                 "--no-store"]) == 0
    err = capsys.readouterr().err
    assert "virtlab: warning: native with 1 guests: a p99 rests on only" in err


@pytest.mark.parametrize("argv", [["capacity", "--p99-limit", "1ms", "-r", "4",
                                   "--max-replications", "2"],
                                  ["capacity", "--p99-limit", "1ms", "--store", "/proc/x/y"]])
def test_cli_capacity_bad_input_is_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("virtlab: error: --") and len(err.splitlines()) == 1
