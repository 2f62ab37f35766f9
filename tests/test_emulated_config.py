"""Presets, access tables as data, profiles and the command line of the emulated path."""

from __future__ import annotations

import json

import pytest

from virtlab import run
from virtlab.cli import main
from virtlab.config import dump_scenario, scenario_from_dict
from virtlab.cpusupport import PRESET_FIELDS, PRESETS
from virtlab.errors import ConfigError
from virtlab.hardware import HypervisorParams
from virtlab.paths.emulated import EmulatedParams
from virtlab.paths.emulation.accesses import builtin_nic

FAST = ["--duration", "3ms", "--warmup", "1ms", "-r", "1"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_fills_every_unset_cost_and_cites_each(name):
    params = HypervisorParams(cpu_support=name)
    preset = PRESETS[name]
    for field in PRESET_FIELDS:
        assert getattr(params, field) == getattr(preset, field)
        assert preset.sources.get(field), (name, field)


def test_an_explicit_cost_wins_over_the_preset():
    params = HypervisorParams(cpu_support="vtx-first-gen", exit_kernel_cycles=1234.0,
                              posted_interrupts=True)
    assert params.exit_kernel_cycles == 1234.0 and params.posted_interrupts is True
    assert params.irq_inject_cycles == PRESETS["vtx-first-gen"].irq_inject_cycles


def test_defaults_are_the_modern_preset():
    assert HypervisorParams() == HypervisorParams(cpu_support="modern")


def test_unknown_preset_names_the_field_and_the_choices():
    with pytest.raises(ConfigError, match=r"hypervisor\.cpu_support: must be one of "
                                          r"'binary-translation'.*got 'p4'"):
        scenario_from_dict({"hypervisor": {"cpu_support": "p4"}})


def test_cli_cpu_support_flag(capsys):
    assert main(["compare", *FAST, "--approaches", "emulated", "--cpu-support",
                 "vtx-first-gen", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scenario"]["hypervisor"]["cpu_support"] == "vtx-first-gen"
    # One basis (cpusupport, S161): AA06's 2,409-cycle round trip + KVM's handling of a
    # simple exit in 2010 (S28's 2,000 cycles - S162's 950-cycle Nehalem round trip).
    assert doc["scenario"]["hypervisor"]["exit_roundtrip_cycles"] == 2409.0
    assert doc["scenario"]["hypervisor"]["exit_kernel_cycles"] == 2409.0 + (2000.0 - 950.0)
    entry = doc["entries"][0]
    assert set(entry["exits_by_reason"]) == {"mmio", "pio", "inject", "eoi", "other"}
    assert set(entry["latency_breakdown_us"]) >= {"guest", "exits", "device_model", "copies",
                                                  "device", "interrupt", "queueing"}


def test_cli_bad_preset_is_one_line_and_status_2(capsys):
    assert main(["compare", "--cpu-support", "p4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--cpu-support" in err and "vtx-first-gen" in err


def test_cli_bad_device_is_one_line_naming_the_field(capsys):
    assert main(["compare", *FAST, "--set", 'emulated.nic_model="rtl8139"']) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("virtlab: error: emulated.nic_model: must be one of 'e1000', 'pcnet32', "
                   "got 'rtl8139'")


def test_cli_breakdown_table_and_trace_breakdown(capsys):
    assert main(["compare", *FAST, "--approaches", "native,emulated", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "Where did the time go?" in out and "dev.model" in out
    assert main(["trace", "--approach", "emulated", "--cpu-support", "modern-apicv"]) == 0
    out = capsys.readouterr().out
    assert "where the" in out and "exits by reason: mmio" in out
    assert "inject virtual interrupt" not in out  # posted interrupts: no injection work
    assert main(["trace", "--approach", "native"]) == 0
    assert "where the" not in capsys.readouterr().out


def test_presets_and_devices_commands(capsys):
    assert main(["presets", "--sources"]) == 0
    out = capsys.readouterr().out
    assert "vtx-first-gen" in out and "2,409" in out
    assert main(["devices", "ide"]) == 0
    out = capsys.readouterr().out
    assert "issue: 23 trapping access(es)" in out and "irq_entry: 8" in out
    assert main(["devices", "rtl8139"]) == 2


def test_a_partial_access_table_is_merged_over_the_builtin_one():
    def one_transaction(emulated):
        scenario = scenario_from_dict({"emulated": emulated, "guests": [
            {"name": "g", "approach": "emulated", "workloads": [{"kind": "rr"}]}]})
        return scenario, run(scenario, 0, max_requests=1, records=True).records[0]

    changed, record = one_transaction({"nic_model": "e1000", "nic": {"irq_exit": []}})
    assert changed.emulated.nic.irq_exit == ()
    assert changed.emulated.nic.irq_entry == builtin_nic("e1000").irq_entry
    _, baseline = one_transaction({})
    # The transaction takes two interrupts; each loses its two unmask accesses.
    assert baseline.exits - record.exits == 4


def test_a_bad_access_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"emulated\.nic\.tx_doorbell.*space: must be one "
                                          r"of 'mmio', 'pio'"):
        scenario_from_dict({"emulated": {"nic": {"tx_doorbell": [
            {"register": "TDT", "space": "dma"}]}}})


def test_emulated_params_round_trip_through_toml():
    import tomllib

    scenario = scenario_from_dict({"hypervisor": {"cpu_support": "binary-translation"},
                                   "emulated": {"nic_model": "pcnet32",
                                                "disk_controller": "ide"}})
    again = scenario_from_dict(tomllib.loads(dump_scenario(scenario)))
    assert again.emulated == scenario.emulated and again.hypervisor == scenario.hypervisor


def test_python_construction_resolves_tables_by_name():
    params = EmulatedParams(nic_model="pcnet32", disk_controller="ide")
    assert params.nic == builtin_nic("pcnet32") and params.disk.queue_depth == 1


def test_the_2003_profile_describes_a_hosted_binary_translating_vmm():
    scenario = scenario_from_dict({}, "testbed-2003")
    assert scenario.hypervisor.cpu_support == "binary-translation"
    assert scenario.emulated.nic_model == "pcnet32" and not scenario.emulated.nic.tso
    assert scenario.hypervisor.kind == "hosted"
    # --cpu-support replaces the profile's preset; the profile pins no exit costs, only the
    # era's halt behaviour (no halt polling) and the monitor's kind, which the preset leaves
    # alone.
    flagged = scenario_from_dict({"hypervisor": {"cpu_support": "modern"}}, "testbed-2003")
    assert flagged.hypervisor == HypervisorParams(cpu_support="modern", halt_poll_us=0.0,
                                                  vcpu_wake_latency_us=3.0, kind="hosted")


def test_the_2007_profile_uses_first_generation_vtx():
    scenario = scenario_from_dict({}, "era-2007")
    assert scenario.hypervisor.cpu_support == "vtx-first-gen"
