"""Scenarios: what to simulate, as one frozen, validated value that round-trips through TOML.

A scenario file is TOML with the tables ``[run]``-level keys (``name``, ``profile``,
``duration_us``, ...), the hardware and cost tables (``[host]``, ``[nic]``, ``[disk]``,
``[hypervisor]``, ``[native]``, ``[container]``, ``[passthrough]``, ``[emulated]``,
``[paravirtual]``) and one ``[[guests]]`` entry per guest with its ``[[guests.workloads]]``.
Values come, in increasing priority, from the dataclass defaults, the named **profile**, and
the file itself.

A **profile** is a TOML file with ``[profile]`` (``name``, ``extends``, ``description``), any of
the hardware and cost tables, and an informational ``[measurements]`` table. Built-in profiles
live in ``virtlab/profiles/``; ``--profile`` also accepts a path.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from virtlab.errors import ConfigError
from virtlab.hardware import DiskParams, HostParams, HypervisorParams, NicParams
from virtlab.params import Params, param
from virtlab.paths import APPROACHES
from virtlab.paths.container import ContainerParams
from virtlab.paths.emulated import EmulatedParams
from virtlab.paths.native import NativeParams
from virtlab.paths.paravirtual import ParavirtualParams
from virtlab.paths.passthrough import PassthroughParams
from virtlab.sched.params import GuestSchedParams, SchedulerParams
from virtlab.workload import BlockIO, RequestResponse, Workload, check_workload_names

__all__ = ["GuestSpec", "Scenario", "default_scenario", "load_scenario", "dump_scenario",
           "load_profile", "builtin_profiles", "PARAM_SECTIONS"]

#: Tables a profile may set, in the order they are documented.
PARAM_SECTIONS: tuple[type[Params], ...] = (
    HostParams, NicParams, DiskParams, HypervisorParams, NativeParams, ContainerParams,
    PassthroughParams, EmulatedParams, ParavirtualParams, SchedulerParams)
_SECTION_NAMES = tuple(cls.section for cls in PARAM_SECTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestSpec(Params):
    """One guest (a VM, a container, or a native process group) and its workloads."""

    name: str = param("vm0", source="-", doc="Guest name; prefixes its scopes and streams.")
    approach: str = param("paravirtual", choices=APPROACHES, source="-",
                          doc="How the guest's I/O is virtualized.")
    vcpus: int = param(2, lo=1, hi=1024, source="assumption",
                       doc="vCPUs (VM) or CPUs (container, native) the guest may use.")
    workloads: tuple[Workload, ...] = field(default=(RequestResponse(),))
    sched: GuestSchedParams = field(default_factory=GuestSchedParams)

    def check(self) -> None:
        """A guest needs at least one workload, with unique names; caps fit its CPUs."""
        if not self.workloads:
            raise ConfigError("workloads", "a guest needs at least one workload")
        check_workload_names(self.name, self.workloads)
        self.sched.check_cpus(self.vcpus)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario(Params):
    """Everything one run needs except the seed. Pure data; :func:`virtlab.run` executes it.

    Measurement: requests that *complete* in ``[warmup_us, duration_us]`` count; the run
    continues for ``cooldown_us`` so that requests arriving near the end are not censored in
    latency statistics of open-loop runs.
    """

    name: str = param("default", source="-", doc="Scenario name.")
    profile: str = param("modern", source="-", doc="Profile the hardware and costs came from.")
    duration_us: float = param(20_000.0, unit="µs", lo=0.0, hi=1e12, lo_open=True,
                               source="assumption (thousands of requests per workload on the "
                                      "default scenario)",
                               doc="End of the measurement window.")
    warmup_us: float = param(2_000.0, unit="µs", lo=0.0, hi=1e12, source="assumption",
                             doc="Start of the measurement window; earlier requests are "
                                 "discarded.")
    cooldown_us: float = param(0.0, unit="µs", lo=0.0, hi=1e12, source="assumption",
                               doc="Extra simulated time after the window.")
    host: HostParams = field(default_factory=HostParams)
    nic: NicParams = field(default_factory=NicParams)
    disk: DiskParams = field(default_factory=DiskParams)
    hypervisor: HypervisorParams = field(default_factory=HypervisorParams)
    native: NativeParams = field(default_factory=NativeParams)
    container: ContainerParams = field(default_factory=ContainerParams)
    passthrough: PassthroughParams = field(default_factory=PassthroughParams)
    emulated: EmulatedParams = field(default_factory=EmulatedParams)
    paravirtual: ParavirtualParams = field(default_factory=ParavirtualParams)
    scheduler: SchedulerParams = field(default_factory=SchedulerParams)
    guests: tuple[GuestSpec, ...] = field(default=(GuestSpec(),))

    def check(self) -> None:
        """The window must be non-empty and guest names unique."""
        if self.warmup_us >= self.duration_us:
            raise ConfigError("warmup_us", f"must be below duration_us ({self.duration_us:g}), "
                                           f"got {self.warmup_us:g}")
        if not self.guests:
            raise ConfigError("guests", "a scenario needs at least one guest")
        names = [g.name for g in self.guests]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError("guests", f"guest name {name!r} is used twice")

    def path_params(self, approach: str) -> Params:
        """The parameter table of an approach (``scenario.paravirtual`` for 'paravirtual')."""
        return getattr(self, approach)

    def with_approach(self, approach: str) -> Scenario:
        """The same scenario with every guest switched to ``approach``."""
        if approach not in APPROACHES:
            raise ConfigError("approach", f"must be one of {', '.join(APPROACHES)}, "
                                          f"got {approach!r}")
        guests = tuple(dataclasses.replace(g, approach=approach) for g in self.guests)
        return dataclasses.replace(self, guests=guests)


def default_scenario() -> Scenario:
    """The default scenario: a request/response guest and a disk guest, modern hardware.

    ``net``: netperf TCP_RR, 100-byte requests, 200-byte responses, 4 transactions in flight
    (enough load to show batching). ``disk``: fio 4 KiB random reads, iodepth 32.
    """
    return Scenario(guests=(
        GuestSpec(name="net", vcpus=2, workloads=(RequestResponse(in_flight=4),)),
        GuestSpec(name="disk", vcpus=2, workloads=(BlockIO(),)),
    ))


# Profiles --------------------------------------------------------------------------------------
def builtin_profiles() -> list[str]:
    """Names of the profiles shipped with virtlab."""
    root = resources.files("virtlab") / "profiles"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def _read_toml(path: Path | Any, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(what, f"file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(what, f"{path} is not valid TOML: {err}") from None


def load_profile(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Resolve a profile (built-in name or TOML path) into a dict of parameter tables.

    ``extends`` chains are followed (child values win); unknown tables are rejected.
    """
    if name_or_path in _seen:
        raise ConfigError("profile.extends", f"cycle: {' -> '.join((*_seen, name_or_path))}")
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        data = _read_toml(Path(name_or_path), "profile")
    else:
        root = resources.files("virtlab") / "profiles"
        candidate = root / f"{name_or_path}.toml"
        if not candidate.is_file():
            raise ConfigError("profile", f"must be one of {', '.join(builtin_profiles())} "
                                         f"or a path to a .toml file, got {name_or_path!r}")
        data = _read_toml(candidate, "profile")
    meta = data.pop("profile", {})
    data.pop("measurements", None)  # informational only (see module docstring)
    unknown = sorted(set(data) - set(_SECTION_NAMES))
    if unknown:
        raise ConfigError(f"profile.{unknown[0]}",
                          f"unknown table; allowed: profile, measurements, "
                          f"{', '.join(_SECTION_NAMES)}")
    unknown_meta = sorted(set(meta) - {"name", "extends", "description"})
    if unknown_meta:
        raise ConfigError(f"profile.{unknown_meta[0]}",
                          "unknown key; allowed: name, extends, description")
    base: dict[str, Any] = {}
    parent = meta.get("extends")
    if parent:
        base = load_profile(str(parent), (*_seen, name_or_path))
    return _merge(base, data)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def scenario_from_dict(data: Mapping[str, Any], profile: str | None = None) -> Scenario:
    """Build a scenario from a mapping, applying the profile underneath the mapping's values."""
    data = dict(data)
    profile_name = profile or str(data.get("profile", "modern"))
    tables = load_profile(profile_name)
    data["profile"] = profile_name
    if "guests" not in data:
        data["guests"] = default_scenario().to_dict()["guests"]
    return Scenario.from_dict(_merge(tables, data))


def load_scenario(path: str | Path, profile: str | None = None) -> Scenario:
    """Load a scenario TOML file; ``profile`` (e.g. from ``--profile``) overrides the file's."""
    return scenario_from_dict(_read_toml(Path(path), "config"), profile)


def dump_scenario(scenario: Scenario) -> str:
    """Serialise a scenario to TOML text (loads back to an equal scenario)."""
    import tomli_w

    return tomli_w.dumps(scenario.to_dict())
