"""Warnings: one line each on stderr, when a number needs care, and not otherwise."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from virtlab.advice import (
    MAX_RELATIVE_HALF_WIDTH,
    MIN_REQUESTS_PER_REPLICATION,
    device_bound_rows,
    ignored_settings,
    thin_rows,
)
from virtlab.cli import main
from virtlab.config import default_scenario
from virtlab.experiment import Comparison, Entry, Result

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--duration", "4ms", "--warmup", "1ms", "-r", "2"]


def _warnings(argv, capsys):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 0, err
    lines = [line for line in err.splitlines() if line.startswith("virtlab: warning: ")]
    assert len(lines) == len(err.strip().splitlines())  # every stderr line is a warning line
    return lines


def _comparison(kind="rr", **means):
    base = {"requests": 1000.0, "throughput_per_s": 1e5, "latency_mean_us": 50.0,
            "disk_utilisation": 0.1, "nic_tx_utilisation": 0.1, "nic_rx_utilisation": 0.1,
            "core_utilisation": 0.1}
    base.update({k: v for k, v in means.items() if not k.endswith("_half")})
    halves = {"throughput_per_s": means.get("throughput_half", 1e3),
              "latency_mean_us": means.get("latency_half", 0.5)}
    entry = Entry("vm", "w", "native", kind, 3, 0.95, base, halves)
    return Comparison([Result(default_scenario(), 0, 3, 0.95, [entry])])


# Thin rows ------------------------------------------------------------------------------------

def test_the_tours_second_command_warns_about_its_disk_row(capsys):
    """virtlab compare --profile testbed-2003: the 2003 disk completes a few I/Os per window."""
    lines = _warnings(["compare", "--profile", "testbed-2003", "--approaches", "native",
                       "-r", "2"], capsys)
    disk = [line for line in lines if "disk.fio (native)" in line]
    assert len(disk) == 1 and "requests per replication" in disk[0]
    assert "raise --duration" in disk[0]
    assert not any("net.rr" in line and "requests per replication" in line for line in lines)


def test_the_main_comparison_has_no_thin_row_and_only_the_disk_is_flagged(capsys):
    """``virtlab compare`` as the README runs it: every row rests on enough data."""
    lines = _warnings(["compare"], capsys)
    assert not any("requests per replication" in line or "CI wider" in line for line in lines)
    assert not any("net.rr" in line for line in lines)
    assert all(line.startswith("virtlab: warning: disk.fio: the disk is the bottleneck")
               for line in lines)


def test_two_short_replications_are_told_to_raise_r(capsys):
    lines = _warnings(["compare", *FAST, "--approaches", "paravirtual"], capsys)
    assert any("disk.fio (paravirtual): 95 % CI wider than 10% of the mean" in line
               and "raise -r" in line for line in lines), lines


@pytest.mark.parametrize(("means", "expected"), [
    ({}, None),
    ({"requests": MIN_REQUESTS_PER_REPLICATION - 1}, "--duration"),
    ({"requests": MIN_REQUESTS_PER_REPLICATION}, None),
    ({"throughput_half": 1e5 * MAX_RELATIVE_HALF_WIDTH * 1.01}, "raise -r"),
    ({"throughput_half": 1e5 * MAX_RELATIVE_HALF_WIDTH * 0.99}, None),
    ({"latency_half": 50 * MAX_RELATIVE_HALF_WIDTH * 1.5}, "raise -r"),
    ({"latency_half": math.nan}, None),  # one replication: no CI, no claim
    ({"requests": 0.0}, "no request completed"),
])
def test_thin_row_thresholds(means, expected):
    lines = thin_rows(_comparison(**means), default_scenario(), 3)
    if expected is None:
        assert lines == []
    else:
        assert len(lines) == 1 and expected in lines[0]


def test_a_busy_loop_is_judged_by_its_cpu_share_not_its_chunk_count():
    assert thin_rows(_comparison("cpu", requests=5.0), default_scenario(), 3) == []
    assert thin_rows(_comparison("cpu", requests=0.0), default_scenario(), 3) != []


# Ignored settings -----------------------------------------------------------------------------

def test_a_rate_on_a_closed_loop_is_named_as_ignored(capsys):
    lines = _warnings(["compare", *FAST, "--approaches", "native", "--set",
                       "guests[0].workloads[0].rate_per_s=5000"], capsys)
    ignored = [line for line in lines if "is ignored" in line]
    assert len(ignored) == 1
    assert "guests[0].workloads[0].rate_per_s = 5000 is ignored" in ignored[0]
    assert 'loop = "open"' in ignored[0]


def test_the_same_rate_on_an_open_loop_is_not(capsys):
    lines = _warnings(["compare", *FAST, "--approaches", "native", "--set",
                       "guests[0].workloads[0].rate_per_s=5000", "--set",
                       'guests[0].workloads[0].loop="open"'], capsys)
    # The default scenario keeps 4 transactions in flight, which an open loop ignores.
    assert [line for line in lines if "is ignored" in line] == [
        'virtlab: warning: guests[0].workloads[0].in_flight = 4 is ignored: the workload runs '
        'in open loop (set guests[0].workloads[0].loop = "closed" to use it, or leave it at '
        'its default, 1)']
    lines = _warnings(["compare", *FAST, "--approaches", "native", "--set",
                       "guests[0].workloads[0].rate_per_s=5000", "--set",
                       'guests[0].workloads[0].loop="open"', "--set",
                       "guests[0].workloads[0].in_flight=1"], capsys)
    assert not any("is ignored" in line for line in lines)


def test_in_flight_on_an_open_loop_is_named_as_ignored():
    from virtlab.config import scenario_from_dict

    data = default_scenario().to_dict()
    data["guests"][0]["workloads"][0].update(loop="open", in_flight=8)
    lines = ignored_settings(scenario_from_dict(data))
    assert lines == ['guests[0].workloads[0].in_flight = 8 is ignored: the workload runs in '
                     'open loop (set guests[0].workloads[0].loop = "closed" to use it, or leave '
                     'it at its default, 1)']
    assert ignored_settings(default_scenario()) == []


def test_run_names_a_changed_table_no_guest_uses(capsys):
    config = str(ROOT / "examples" / "netperf-rr.toml")
    lines = _warnings(["run", "--config", config, *FAST, "--set",
                       "emulated.irq_min_interval_us=50.0"], capsys)
    assert any(line.startswith("virtlab: warning: emulated.irq_min_interval_us is ignored: no "
                               "guest uses the emulated approach") for line in lines), lines
    # compare switches every guest to each approach, so there the table is used.
    lines = _warnings(["compare", "--config", config, *FAST, "--approaches", "emulated",
                       "--set", "emulated.irq_min_interval_us=50.0"], capsys)
    assert not any("is ignored" in line for line in lines)


# Device-bound rows ----------------------------------------------------------------------------

def test_a_link_bound_stream_is_flagged_with_its_link(capsys):
    lines = _warnings(["run", "--config", str(ROOT / "examples" / "bulk-stream.toml"), *FAST],
                      capsys)
    bound = [line for line in lines if "bottleneck" in line]
    assert len(bound) == 1 and "NIC transmit link" in bound[0]


@pytest.mark.parametrize(("kind", "means", "resource"), [
    ("block", {"disk_parallelism_util": 0.95}, "disk"),   # the "Disk limits" table's verdict
    ("block", {"disk_interface_util": 0.91}, "disk"),
    ("block", {"disk_queue_util": 0.89, "disk_utilisation": 0.95}, None),  # table says latency
    ("block", {"nic_tx_utilisation": 0.95}, None),   # a block workload does not use the NIC
    ("rr", {"nic_rx_utilisation": 0.92}, "NIC receive link"),
    ("rr", {"disk_utilisation": 0.99}, None),        # nor a network one the disk
    ("rr", {"core_utilisation": 0.99}, None),        # CPU-bound: the ratio is the answer
    ("rr", {"nic_tx_utilisation": 0.89}, None),
    ("cpu", {"nic_tx_utilisation": 0.99}, None),
])
def test_device_bound_only_for_the_workloads_device(kind, means, resource):
    lines = device_bound_rows(_comparison(kind, **means))
    if resource is None:
        assert lines == []
    else:
        assert len(lines) == 1 and f"the {resource} is the bottleneck" in lines[0]

