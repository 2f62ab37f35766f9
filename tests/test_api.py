"""virtlab.api mirrors the command line: same inputs, same checks, identical numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import virtlab.api as vl
from virtlab.cli import main
from virtlab.config import default_scenario, scenario_from_dict
from virtlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _cli_json(argv, capsys):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _api_json(comparison):
    from virtlab.experiment import json_safe

    return json.loads(json.dumps(json_safe(comparison.to_json_dict()), default=str))


def test_compare_gives_the_cli_numbers_for_the_same_inputs(capsys):
    argv = ["compare", "--profile", "testbed-2014", "--set", "paravirtual.ring_size=512",
            "--set", "guests[0].workloads[0].in_flight=2", "--cpu-support", "vtx-nehalem",
            "--approaches", "native,paravirtual,emulated", "-r", "2", "--seed", "5",
            "--duration", "3ms", "--warmup", "500us"]
    cli = _cli_json(argv, capsys)
    api = vl.compare(profile="testbed-2014",
                     set={"paravirtual.ring_size": 512, "guests[0].workloads[0].in_flight": 2},
                     cpu_support="vtx-nehalem", approaches=["native", "paravirtual", "emulated"],
                     replications=2, seed=5, duration="3ms", warmup=500.0, jobs=1)
    assert _api_json(api) == cli
    # The same call with another seed differs: the equality above is not vacuous.
    other = vl.compare(profile="testbed-2014", set={"paravirtual.ring_size": 512},
                       approaches="native", replications=2, seed=6, duration="3ms",
                       warmup="500us")
    assert _api_json(other)["entries"][0] != cli["entries"][0]


def test_run_gives_the_cli_numbers_for_a_scenario_file(capsys):
    config = str(ROOT / "examples" / "netperf-rr.toml")
    cli = _cli_json(["run", "--config", config, "-r", "2", "--duration", "3ms", "--warmup",
                     "1ms", "--set", "guests[0].vcpus=3"], capsys)
    api = vl.run(config, replications=2, duration="3ms", warmup="1ms",
                 set=["guests[0].vcpus=3"])
    assert _api_json(api) == cli


@pytest.mark.parametrize(("call", "field"), [
    (lambda: vl.scenario(set={"paravirtual.ring_size": 100}), "paravirtual.ring_size"),
    (lambda: vl.scenario(set={"guests[0].vcpu": 2}), "guests[0].vcpu"),
    (lambda: vl.scenario(profile="testbed2003"), "profile"),
    (lambda: vl.scenario(duration="5"), "--duration"),
    (lambda: vl.scenario(duration=-5.0), "--duration"),
    (lambda: vl.scenario(cpu_support="p4"), "--cpu-support"),
    (lambda: vl.compare(approaches="native,magic"), "--approaches"),
    (lambda: vl.compare(replications=0), "--replications"),
    (lambda: vl.compare(jobs=0), "--jobs"),
    (lambda: vl.compare(default_scenario(), set={"host.cores": 2}), "set"),
])
def test_bad_input_raises_the_cli_error_naming_the_field(call, field):
    with pytest.raises(ConfigError) as caught:
        call()
    assert caught.value.field.startswith(field), caught.value


def test_the_cli_reports_the_same_fields_for_the_same_mistakes(capsys):
    assert main(["compare", "--set", "paravirtual.ring_size=100"]) == 2
    assert capsys.readouterr().err.startswith("virtlab: error: paravirtual.ring_size:")


def test_a_profile_applied_to_a_dict_of_another_profile_takes_its_values():
    """The trap of issue 14: a to_dict() re-labelled testbed-2003 used to keep modern values."""
    modern = default_scenario()
    old = scenario_from_dict(modern.to_dict(), "testbed-2003")
    assert old == scenario_from_dict({}, "testbed-2003")
    assert old.profile == "testbed-2003"
    assert old.nic.line_rate_gbps != modern.nic.line_rate_gbps
    assert old.host.cores != modern.host.cores
    # A value the mapping changed away from its own profile is its own, and stays.
    data = modern.to_dict()
    data["nic"]["mtu_bytes"] = 4000
    data["duration_us"] = 7000.0
    kept = scenario_from_dict(data, "testbed-2003")
    assert kept.nic.mtu_bytes == 4000 and kept.duration_us == 7000.0
    assert kept.host.cores == old.host.cores
    # with_profile does the same for a Scenario, and keeps its guests.
    assert vl.with_profile(modern, "testbed-2003") == old
    assert vl.with_profile(old, "modern") == modern


def test_the_cli_profile_flag_rebases_a_dumped_scenario_file(tmp_path):
    from virtlab.config import dump_scenario

    path = tmp_path / "dumped.toml"
    path.write_text(dump_scenario(default_scenario()))
    assert vl.scenario(str(path), profile="testbed-2003") == scenario_from_dict(
        {}, "testbed-2003")


def test_warnings_are_the_cli_warnings(capsys):
    argv = ["compare", "--profile", "testbed-2003", "--approaches", "native", "-r", "2",
            "--duration", "3ms", "--warmup", "1ms"]
    assert main(argv) == 0
    printed = [line.removeprefix("virtlab: warning: ")
               for line in capsys.readouterr().err.splitlines()]
    api = vl.compare(profile="testbed-2003", approaches="native", replications=2,
                     duration="3ms", warmup="1ms")
    assert vl.warnings(api) == printed and printed


def test_the_python_api_page_runs_as_written(monkeypatch):
    """Every Python block of docs/python-api.md runs (from the repository root, as documented)."""
    import re

    monkeypatch.chdir(ROOT)
    page = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), {})  # noqa: S102 - our own docs
