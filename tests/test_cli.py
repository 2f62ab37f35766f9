"""The command line: the main job, JSON output, tracing, and one-line errors with status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from virtlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--duration", "4ms", "--warmup", "1ms", "-r", "2"]


def _run(argv, capsys):
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_compare_echoes_seed_and_parameters_then_prints_the_table(capsys):
    status, out, _ = _run(["compare", *FAST, "--seed", "7"], capsys)
    assert status == 0
    assert out.startswith("ARG seed 7\n")
    assert "  host.cores = 8" in out and "  paravirtual.ring_size = 256" in out
    for heading in ("== net.rr (rr) ==", "== disk.fio (block) =="):
        assert heading in out
    for approach in ("native", "container", "paravirtual", "emulated"):
        assert f"\n{approach} " in out


def test_compare_json_is_one_document_with_documented_fields(capsys):
    status, out, _ = _run(["compare", *FAST, "--json", "--approaches", "native,emulated"],
                          capsys)
    assert status == 0
    doc = json.loads(out)
    assert doc["seed"] == 0 and doc["replications"] == 2
    assert doc["scenario"]["host"]["cores"] == 8
    assert {e["approach"] for e in doc["entries"]} == {"native", "emulated"}
    entry = doc["entries"][0]
    for field in ("guest", "workload", "approach", "throughput_per_s", "throughput_bytes_per_s",
                  "latency_us", "cpu_us_per_request", "exits_per_request",
                  "notifications_per_request", "interrupts_per_request", "cpu_share"):
        assert field in entry
    assert set(entry["latency_us"]) == {"mean", "p50", "p95", "p99"}


@pytest.mark.parametrize(("argv", "field"), [
    (["compare", "--approaches", "native,magic"], "--approaches"),
    (["compare", "--set", "paravirtual.ring_size=100"], "paravirtual.ring_size"),
    (["compare", "--set", "host.cores=-1"], "host.cores"),
    (["compare", "--duration", "fast"], "--duration"),
    (["compare", "--replications", "0"], "--replications"),
    (["compare", "--profile", "no-such-profile"], "profile"),
    (["run", "--config", "/nonexistent.toml"], "--config"),
    (["trace", "--guest", "nobody"], "--guest"),
])
def test_bad_input_is_one_line_naming_the_field_with_status_2(argv, field, capsys):
    status, out, err = _run(argv, capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"virtlab: error: {field}")
    assert "Traceback" not in err


def test_bad_value_in_a_scenario_file(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[[guests]]\nname = 'vm'\napproach = 'paravirtual'\n"
                      "[paravirtual]\nring_size = 300\n")
    status, _, err = _run(["run", "--config", str(config)], capsys)
    assert status == 2
    assert err.strip() == ("virtlab: error: paravirtual.ring_size: must be a power of two in "
                           "[2, 32768], got 300")


def test_unknown_flag_is_one_line_and_status_2():
    proc = subprocess.run([sys.executable, "-m", "virtlab", "compare", "--bogus"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "unrecognized arguments: --bogus" in proc.stderr


def test_trace_tells_the_story_of_one_request(capsys):
    status, out, _ = _run(["trace", "--approach", "paravirtual"], capsys)
    assert status == 0
    assert "kick: ioeventfd exit" in out
    assert "request #0: latency" in out
    times = [float(line.split()[0]) for line in out.splitlines()
             if line.strip() and line.split()[0].replace(".", "", 1).isdigit()]
    assert times == sorted(times) and len(times) > 5


@pytest.mark.parametrize("config", sorted((ROOT / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_example_runs(config, capsys):
    status, out, err = _run(["run", "--config", str(config), *FAST], capsys)
    assert status == 0, err
    assert "==" in out


def test_params_lists_every_section(capsys):
    status, out, _ = _run(["params"], capsys)
    assert status == 0
    for section in ("[host]", "[nic]", "[disk]", "[hypervisor]", "[container]", "[emulated]",
                    "[paravirtual]"):
        assert section in out
