"""Parameters: validation names the field, TOML round-trips, every default has a source."""

from __future__ import annotations

import dataclasses

import pytest

from virtlab import Scenario, default_scenario, dump_scenario
from virtlab.config import (
    PARAM_SECTIONS,
    GuestSpec,
    builtin_profiles,
    load_profile,
    scenario_from_dict,
)
from virtlab.errors import ConfigError
from virtlab.params import describe
from virtlab.paths.paravirtual import ParavirtualParams
from virtlab.sched.params import GuestSchedParams
from virtlab.workload import BlockIO, BulkStream, CpuHog, RequestResponse

ALL_PARAM_CLASSES = (*PARAM_SECTIONS, Scenario, GuestSpec, GuestSchedParams, RequestResponse,
                     BulkStream, BlockIO, CpuHog)


@pytest.mark.parametrize("cls", ALL_PARAM_CLASSES, ids=lambda c: c.__name__)
def test_every_parameter_declares_a_source_and_a_meaning(cls):
    for name, default, info in describe(cls):
        assert info.source.strip(), f"{cls.__name__}.{name} has no source"
        assert info.doc.strip(), f"{cls.__name__}.{name} has no description"
        if isinstance(default, float) and name.endswith(("_us", "_cycles")):
            assert info.unit, f"{cls.__name__}.{name} has no unit"


@pytest.mark.parametrize("size", [3, 100, 0, 65536])
def test_ring_size_must_be_a_power_of_two(size):
    with pytest.raises(ConfigError) as err:
        ParavirtualParams(ring_size=size)
    assert err.value.field == "ring_size"
    assert "power of two" in err.value.message


def test_ring_size_powers_of_two_are_accepted():
    assert ParavirtualParams(ring_size=32768).ring_size == 32768


def test_wrong_type_and_range_name_the_field():
    with pytest.raises(ConfigError, match=r"^host.cores: must be of type int"):
        scenario_from_dict({"host": {"cores": "eight"}}).host  # noqa: B018
    with pytest.raises(ConfigError, match=r"^host.cores: must be in \[1, 1024\]"):
        scenario_from_dict({"host": {"cores": 0}})


def test_unknown_field_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"^paravirtual.ring_sise: unknown field; did you "
                                          r"mean ring_size\? allowed fields are"):
        scenario_from_dict({"paravirtual": {"ring_sise": 256}})


def test_unknown_approach_and_workload_kind():
    with pytest.raises(ConfigError, match=r"^guests\[0\]\.approach: must be one of"):
        scenario_from_dict({"guests": [{"name": "x", "approach": "magic"}]})
    with pytest.raises(ConfigError, match=r"kind: must be one of 'rr', 'stream', 'block'"):
        scenario_from_dict({"guests": [{"name": "x", "workloads": [{"kind": "nope"}]}]})


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="warmup_us"):
        Scenario(duration_us=10.0, warmup_us=20.0)
    with pytest.raises(ConfigError, match="used twice"):
        Scenario(guests=(GuestSpec(name="a"), GuestSpec(name="a")))


def test_frozen_and_slotted():
    scenario = default_scenario()
    with pytest.raises(dataclasses.FrozenInstanceError):
        scenario.duration_us = 1.0  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        scenario.host.not_a_field = 1  # type: ignore[attr-defined]


def test_toml_round_trip_of_the_default_scenario():
    import tomllib

    scenario = default_scenario()
    assert scenario_from_dict(tomllib.loads(dump_scenario(scenario))) == scenario


@pytest.mark.parametrize("name", builtin_profiles())
def test_builtin_profiles_load_and_validate(name):
    scenario = scenario_from_dict({}, profile=name)
    assert scenario.profile == name


def test_profile_values_apply_under_the_scenario_values():
    scenario = scenario_from_dict({"host": {"cores": 3}}, profile="testbed-2003")
    assert scenario.nic.line_rate_gbps == 1.0  # from the profile
    assert scenario.host.cores == 3            # the scenario file wins


def test_bad_profile_name_and_table(tmp_path):
    with pytest.raises(ConfigError, match="^profile: must be one of"):
        load_profile("no-such-profile")
    bad = tmp_path / "bad.toml"
    bad.write_text("[profile]\nname='x'\n[guests]\nx=1\n")
    with pytest.raises(ConfigError, match="unknown table"):
        load_profile(str(bad))
