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


def test_compare_prints_the_table_first_then_one_provenance_line(capsys):
    status, out, _ = _run(["compare", *FAST, "--seed", "7"], capsys)
    assert status == 0
    assert out.startswith("== net.rr (rr) ==\n")
    assert "== disk.fio (block) ==" in out
    for approach in ("native", "container", "paravirtual", "emulated"):
        assert f"\n{approach} " in out
    provenance = [line for line in out.splitlines() if line.startswith("seed 7 · ")]
    assert len(provenance) == 1
    assert "2 replications · profile modern · changed: duration_us=4000.0 warmup_us=1000.0" \
        in provenance[0]
    assert "host.cores = 8" not in out  # the echo is behind --echo-params


def test_echo_params_adds_every_effective_parameter_after_the_results(capsys):
    status, out, _ = _run(["compare", *FAST, "--approaches", "native", "--echo-params"], capsys)
    assert status == 0
    assert out.index("== net.rr (rr) ==") < out.index("# effective parameters")
    assert "  host.cores = 8" in out and "  paravirtual.ring_size = 256" in out


def test_the_table_fits_the_width_it_is_given(capsys, monkeypatch):
    """Narrower widths drop whole columns (least essential first), never cut a line."""
    seen = {}
    for columns in (200, 100, 60):
        monkeypatch.setenv("COLUMNS", str(columns))
        assert main(["compare", *FAST, "--approaches", "native,emulated"]) == 0
        out = capsys.readouterr().out
        table = out.split("\n\nDisk limits")[0].splitlines()
        assert max(map(len, table)) <= columns, columns
        seen[columns] = table[1].split()
    assert "p50" in seen[200] and "MB/s" in seen[200] and "backend" in seen[200]
    assert "p50" not in seen[100] and "backend" in seen[100]
    assert "backend" not in seen[60] and "cpu" in seen[60] and "req/s" in seen[60]


def test_reproducing_from_the_provenance_line_gives_identical_numbers(capsys, tmp_path):
    """Read the printed line back into flags: same hash, same numbers."""
    import re
    import shlex

    first = ["compare", "--duration", "3ms", "--warmup", "1ms", "-r", "2", "--seed", "11",
             "--profile", "testbed-2014", "--set", "paravirtual.ring_size=512",
             "--approaches", "native,paravirtual"]
    assert main([*first, "--csv", str(tmp_path / "a.csv")]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("seed ")][0]
    match = re.fullmatch(r"seed (\d+) · (\d+) replications · profile (\S+) · changed: (.*) · "
                         r"scenario ([0-9a-f]{12})", line)
    assert match, line
    seed, reps, profile, changed, digest = match.groups()
    sets = [a for item in shlex.split(changed) for a in ("--set", item)]
    assert "paravirtual.ring_size=512" in shlex.split(changed)
    again = ["compare", "--seed", seed, "-r", reps, "--profile", profile, *sets,
             "--approaches", "native,paravirtual", "--csv", str(tmp_path / "b.csv")]
    assert main(again) == 0
    assert f"scenario {digest}" in capsys.readouterr().out
    import pandas as pd

    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    pd.testing.assert_frame_equal(a, b)
    # Another seed gives other numbers: the comparison above can fail.
    assert main([*again[:2], "12", *again[3:]]) == 0
    assert not pd.read_csv(tmp_path / "b.csv").equals(a)


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


@pytest.mark.parametrize("command", ["sweep", "capacity"])
def test_studies_do_not_list_the_table_flags_they_do_not_print(command, capsys):
    """--breakdown and --echo-params shape compare/run's tables; sweep and capacity have none."""
    from virtlab.cli import make_parser

    helps = {name: sub.format_help() for name, sub in
             make_parser()._subparsers._group_actions[0].choices.items()}
    assert "--breakdown" in helps["compare"] and "--echo-params" in helps["run"]
    assert "--breakdown" not in helps[command] and "--echo-params" not in helps[command]
    required = (["--vary", "guests[0].vcpus=1"] if command == "sweep"
                else ["--p99-limit", "1ms"])
    status, out, err = _run([command, *required, "--breakdown"], capsys)
    assert status == 2 and out == ""
    assert "unrecognized arguments: --breakdown" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("argv", "hint"), [
    (["compare", "--set", "guests[0].vcpu=1"], "did you mean vcpus?"),
    (["compare", "--approaches", "native,paravirt"], "did you mean paravirtual?"),
    (["compare", "--profile", "testbed2003"], "did you mean testbed-2003?"),
    (["compare", "--cpu-support", "vtx-nehalm"], "did you mean vtx-nehalem?"),
    (["trace", "--approach", "emulate"], "did you mean emulated?"),
])
def test_a_near_miss_gets_did_you_mean(argv, hint, capsys):
    status, _, err = _run(argv, capsys)
    assert status == 2 and len(err.splitlines()) == 1
    assert hint in err


def test_no_did_you_mean_when_nothing_is_close(capsys):
    status, _, err = _run(["compare", "--approaches", "zzzz"], capsys)
    assert status == 2 and "did you mean" not in err


def test_the_breakdown_fits_the_width_too(capsys, monkeypatch):
    argv = ["compare", *FAST, "--approaches", "native,emulated", "--breakdown"]
    monkeypatch.setenv("COLUMNS", "200")
    assert main(argv) == 0
    wide = capsys.readouterr().out.split("Where did the time go?")[1].split("\nseed ")[0]
    monkeypatch.setenv("COLUMNS", "80")
    assert main(argv) == 0
    narrow = capsys.readouterr().out.split("Where did the time go?")[1].split("\nseed ")[0]
    assert max(map(len, narrow.splitlines())) <= 80 < max(map(len, wide.splitlines()))
    for text in (wide, narrow):
        assert "dev.model" in text and "mmio" in text and "== net.rr (rr) ==" in text
    def exit_header(text):
        return next(line for line in text.splitlines() if line.startswith("approach  mmio"))

    assert "mmio µs" in exit_header(wide) and "mmio µs" not in exit_header(narrow)
    assert "narrow terminal" in narrow and "narrow terminal" not in wide
