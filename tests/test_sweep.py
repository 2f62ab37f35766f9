"""Sweeps keep every good point when some fail, stream a lazy grid, and do not depend on the
number of workers; capacity counts guests under a p99 limit."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pandas as pd
import pytest

from tests.study_support import TINY_FLAGS, tiny_scenario
from virtlab import GuestSpec, RequestResponse, Scenario
from virtlab.cli import main
from virtlab.executors import Runner, SerialEngine, Task
from virtlab.hardware import HostParams
from virtlab.sweep import capacity, grid_size, iter_sweep, sweep, with_guest_copies

SHORT = dict(duration_us=4_000.0, warmup_us=1_000.0)


@pytest.fixture(autouse=True)
def _private_store(tmp_path, monkeypatch):
    """CLI runs here write their results store under the test's own directory."""
    monkeypatch.setenv("VIRTLAB_STORE", str(tmp_path / "store"))


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
                                  ["sweep", "--vary", "host.cores=1", "--approaches", ","],
                                  ["capacity", "--p99-limit=-3us"],
                                  ["capacity", "--p99-limit", "1ms", "--max-guests", "0"]])
def test_cli_sweep_and_capacity_bad_input(argv, capsys):
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# Laziness, bounded in-flight work, independence of the number of workers ----------------------

EIGHT_FACTORS = {key: [round(0.1 * (i + 1), 1) for i in range(10)] for key in (
    "host.syscall_us", "host.ctx_switch_us", "host.irq_us", "host.stack_pkt_us",
    "host.bridge_pkt_us", "host.blk_io_us", "nic.wire_latency_us", "nic.peer_stack_us")}


def test_an_eight_factor_grid_streams_without_being_built():
    assert grid_size(EIGHT_FACTORS) == 10 ** 8
    points = iter_sweep(tiny_scenario(), EIGHT_FACTORS, replications=1, jobs=1,
                        max_in_flight=2)
    first = list(itertools.islice(points, 3))
    points.close()
    assert [p.index for p in first] == [0, 1, 2]
    assert first[1].values["nic.peer_stack_us"] == 0.2
    assert first[0].comparison.entries[0].means["requests"] > 0


class _CountingEngine(SerialEngine):
    def __init__(self):
        super().__init__()
        self.most_pending = 0

    def submit(self, tag, task):
        super().submit(tag, task)
        self.most_pending = max(self.most_pending, self.pending)


def test_the_runner_keeps_at_most_max_in_flight_tasks_submitted():
    engine = _CountingEngine()
    tasks = ((i, Task(tiny_scenario(), 0, i)) for i in range(12))
    with Runner(engine) as runner:
        done = sorted(tag for tag, _ in runner.map(tasks, max_in_flight=3))
    assert done == list(range(12))
    assert engine.most_pending == 3


def test_results_are_identical_with_one_and_two_workers():
    factors = {"guests[0].workloads[0].in_flight": [1, 3], "host.cores": [1, 2]}
    one = sweep(tiny_scenario(), factors, ("native", "paravirtual"), replications=2, jobs=1)
    two = sweep(tiny_scenario(), factors, ("native", "paravirtual"), replications=2, jobs=2)
    pd.testing.assert_frame_equal(one.to_frame(), two.to_frame())
    assert len(one) == 4 and not one.failed
    # The factor matters, so equality is not the trivial kind.
    assert one.to_frame()["throughput_per_s"].nunique() > 2


def test_sweep_frame_columns():
    result = sweep(tiny_scenario(), {"host.cores": [1, 0]}, ("native",), replications=2,
                   jobs=1)
    frame = result.to_frame()
    assert list(frame.columns[:4]) == ["study", "point", "vary:host.cores", "guest"]
    assert {"approach", "replications", "error", "latency_p99_us", "latency_p99_us_ci"} <= set(
        frame.columns)
    assert frame["replications"].iloc[0] == 2
    assert frame.loc[frame["point"] == 1, "error"].str.contains("host.cores").all()


def test_cli_sweep_writes_csv_parquet_and_json(tmp_path, capsys):
    csv, parquet = tmp_path / "s.csv", tmp_path / "s.parquet"
    argv = ["sweep", "--vary", "host.cores=1,2", "--approaches", "native", "-r", "2", "-j", "1",
            *TINY_FLAGS, "--csv", str(csv), "--parquet", str(parquet), "--json"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert [p["values"] for p in document["points"]] == [{"host.cores": 1}, {"host.cores": 2}]
    from_csv, from_parquet = pd.read_csv(csv), pd.read_parquet(parquet)
    assert len(from_csv) == len(from_parquet) == 4  # 2 points x the default's 2 guests
    assert (from_parquet["study"] == "sweep").all()
    assert list(from_csv["latency_p99_us"]) == pytest.approx(list(from_parquet["latency_p99_us"]))


def test_cli_compare_writes_csv(tmp_path):
    csv = tmp_path / "c.csv"
    assert main(["compare", "--approaches", "native,container", "-r", "2", *TINY_FLAGS,
                 "--csv", str(csv)]) == 0
    frame = pd.read_csv(csv)
    assert list(frame["approach"].unique()) == ["native", "container"]
    assert (frame["study"] == "compare").all()


def test_cli_output_to_a_missing_directory_fails_before_running(tmp_path, capsys):
    status = main(["sweep", "--vary", "host.cores=1", *TINY_FLAGS, "--csv",
                   str(tmp_path / "nope" / "s.csv")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("virtlab: error: --csv:") and len(err.splitlines()) == 1
