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

Files are read with limits (:func:`read_toml_file`): regular files only (no directory, FIFO or
device), at most :data:`MAX_FILE_BYTES`, UTF-8 TOML nested at most :data:`MAX_NESTING` deep, and
``extends`` chains at most :data:`MAX_EXTENDS` long. A relative path is resolved against the
folder of the file that names it (a profile's ``extends``, a scenario's ``profile``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
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
           "scenario_from_dict",
           "load_profile", "builtin_profiles", "PARAM_SECTIONS", "read_toml_file",
           "check_nesting", "MAX_FILE_BYTES", "MAX_NESTING", "MAX_EXTENDS"]

#: Largest scenario or profile file read (bytes); real ones are a few KiB.
MAX_FILE_BYTES = 1 << 20
#: Deepest nesting of tables and arrays in a file or ``--set`` value (a scenario needs about 6).
MAX_NESTING = 32
#: Longest ``extends`` chain of profiles (the built-in ones are 2 long).
MAX_EXTENDS = 16
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

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
        for index, guest in enumerate(self.guests):  # defaults that depend on [scheduler]
            guest.sched.check_scheduler(self.scheduler, f"guests[{index}].sched")
        if (self.hypervisor.vmm == "xen-hvm"
                and self.emulated.device_model_location == "kernel"):
            # Checked here, not when the path is built, so that it is one error before any run
            # (and not a failed point of every emulated run).
            raise ConfigError("emulated.device_model_location",
                              "Xen HVM emulates the NIC and disk in qemu-dm in dom0, not in the "
                              "hypervisor: use 'user' with hypervisor.vmm = 'xen-hvm', got "
                              "'kernel'")

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


def read_toml_file(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Read a TOML file with limits, or raise :class:`ConfigError` naming ``what`` and the file.

    Only a regular file is read (it is opened without blocking, so a FIFO is refused rather than
    waited on), at most :data:`MAX_FILE_BYTES` of it, as UTF-8; the result is nested at most
    :data:`MAX_NESTING` deep.
    """
    name = os.fsdecode(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(what, f"file not found: {name}") from None
    except IsADirectoryError:
        raise ConfigError(what, f"{name} is a directory; expected a TOML file") from None
    except PermissionError:
        raise ConfigError(what, f"{name}: permission denied (cannot read it)") from None
    except (OSError, ValueError) as err:  # ELOOP, ENAMETOOLONG, ENOTDIR, embedded NUL, ...
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(what, f"cannot open {name!r}: {reason}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(what, f"{name} is a directory; expected a TOML file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(what, f"{name} is not a regular file (a FIFO, device or socket); "
                                    f"expected a TOML file")
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError(what, f"{name} is {info.st_size:,} bytes; the limit is "
                                    f"{MAX_FILE_BYTES:,} bytes (1 MiB)")
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:  # a file may grow, and /proc files report size 0
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise ConfigError(what, f"cannot read {name}: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        raise ConfigError(what, f"{name} is over the limit of {MAX_FILE_BYTES:,} bytes (1 MiB)")
    return parse_toml_bytes(b"".join(chunks), name, what)


def parse_toml_bytes(raw: bytes, name: str, what: str) -> dict[str, Any]:
    """Decode UTF-8 and parse TOML, nested at most :data:`MAX_NESTING` deep."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(what, f"{name} is not UTF-8 text (byte 0x{raw[err.start]:02x} at "
                                f"offset {err.start}); a scenario or profile is a UTF-8 TOML "
                                f"file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(what, f"{name} is not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(what, f"{name} is nested too deeply; at most {MAX_NESTING} levels "
                                f"of tables and arrays are allowed") from None
    check_nesting(data, what, name)
    return data


def check_nesting(data: Any, what: str, name: str = "") -> None:
    """Raise :class:`ConfigError` if tables and arrays nest deeper than :data:`MAX_NESTING`.

    Iterative, so that a hostile value cannot exhaust the interpreter's stack here.
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            where = f"{name} is" if name else "the value is"
            raise ConfigError(what, f"{where} nested {depth} levels deep; at most "
                                    f"{MAX_NESTING} levels of tables and arrays are allowed")
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node)


def _read_toml(path: Path | Any, what: str) -> dict[str, Any]:
    """Kept for callers of the old name: :func:`read_toml_file`."""
    return read_toml_file(path, what)


def _looks_like_path(name: str) -> bool:
    return name.endswith(".toml") or "/" in name or os.sep in name


def _profile_source(name_or_path: Any, base_dir: Path | None, field: str) -> tuple[str, Any]:
    """Where a profile comes from: ``("file", path)`` or ``("builtin", name)``."""
    if not isinstance(name_or_path, str):
        raise ConfigError(field, f"must be a profile name or a path to a .toml file (a string), "
                                 f"got {name_or_path!r}")
    if not name_or_path.strip():
        raise ConfigError(field, f"must be one of {', '.join(builtin_profiles())} or a path to "
                                 f"a .toml file, got an empty string")
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        return "file", Path(os.path.normpath(path))
    if not _PROFILE_NAME.match(name_or_path) or name_or_path not in builtin_profiles():
        import difflib

        close = difflib.get_close_matches(name_or_path, builtin_profiles(), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(field, f"must be one of {', '.join(builtin_profiles())} "
                                 f"or a path to a .toml file, got {name_or_path!r}{hint}")
    return "builtin", name_or_path


def load_profile(name_or_path: str, _seen: tuple[str, ...] = (), *,
                 base_dir: Path | None = None, field: str = "profile") -> dict[str, Any]:
    """Resolve a profile (built-in name or TOML path) into a dict of parameter tables.

    ``extends`` chains are followed (child values win), at most :data:`MAX_EXTENDS` long; a
    relative ``extends`` path is resolved against the folder of the profile that names it.
    Unknown tables are rejected.
    """
    kind, source = _profile_source(name_or_path, base_dir, field)
    key = str(source.resolve()) if kind == "file" else f"builtin:{source}"
    shown = str(source)
    if key in _seen:
        raise ConfigError("profile.extends", f"cycle: {' -> '.join((*_seen, key))}")
    if len(_seen) >= MAX_EXTENDS:
        raise ConfigError("profile.extends", f"the extends chain is longer than {MAX_EXTENDS} "
                                             f"profiles (at {shown})")
    if kind == "file":
        data = read_toml_file(source, field)
        parent_dir: Path | None = source.parent
    else:
        raw = (resources.files("virtlab") / "profiles" / f"{source}.toml").read_bytes()
        data = parse_toml_bytes(raw, f"{source}.toml", field)
        parent_dir = None
    meta = data.pop("profile", {})
    if not isinstance(meta, Mapping):
        raise ConfigError("profile.profile", f"in {shown}: must be a table with name, extends "
                                             f"and description, got {meta!r}")
    data.pop("measurements", None)  # informational only (see module docstring)
    unknown = sorted(set(data) - set(_SECTION_NAMES))
    if unknown:
        raise ConfigError(f"profile.{unknown[0]}",
                          f"unknown table; allowed: profile, measurements, "
                          f"{', '.join(_SECTION_NAMES)}")
    for section in _SECTION_NAMES:
        if section in data and not isinstance(data[section], Mapping):
            raise ConfigError(f"profile.{section}", f"in {shown}: must be a table, got "
                                                    f"{data[section]!r}")
    unknown_meta = sorted(set(meta) - {"name", "extends", "description"})
    if unknown_meta:
        raise ConfigError(f"profile.{unknown_meta[0]}",
                          "unknown key; allowed: name, extends, description")
    base: dict[str, Any] = {}
    parent = meta.get("extends")
    if parent is not None:
        if not isinstance(parent, str) or not parent.strip():
            raise ConfigError("profile.extends", f"in {shown}: must be a profile name or a path "
                                                 f"to a .toml file, got {parent!r}")
        base = load_profile(parent, (*_seen, key), base_dir=parent_dir,
                            field="profile.extends")
    return _merge(base, data)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def scenario_from_dict(data: Mapping[str, Any], profile: str | None = None, *,
                       base_dir: Path | None = None) -> Scenario:
    """Build a scenario from a mapping, applying the profile underneath the mapping's values.

    ``base_dir`` is the folder of the file the mapping came from: a relative ``profile`` path in
    the mapping is resolved against it (a ``profile`` argument is taken as given).

    Changing the profile re-bases the mapping: when ``profile`` is given and the mapping names
    another one (``data["profile"]``, as every ``Scenario.to_dict()`` and dumped file does),
    each hardware or cost value equal to that other profile's value is taken to have come from
    it and is replaced by the new profile's; values that differ from it are the mapping's own
    and win as usual. So ``scenario_from_dict(default_scenario().to_dict(), "testbed-2003")``
    is the testbed-2003 scenario (not modern values under a testbed-2003 label), and
    ``--profile`` on a dumped scenario file means what it says.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("", f"a scenario must be a table, got {type(data).__name__}")
    data = dict(data)
    own = data.get("profile")
    if profile is not None and own is not None and own != profile:
        data = _without_profile_values(data, own, base_dir)
    if profile is not None:
        profile_name, field, folder = profile, "profile", None
    else:
        profile_name, field, folder = data.get("profile", "modern"), "profile", base_dir
    kind, source = _profile_source(profile_name, folder, field)
    if kind == "file":
        profile_name = str(source)
    tables = load_profile(profile_name, field=field)
    data["profile"] = profile_name
    if "guests" not in data:
        data["guests"] = default_scenario().to_dict()["guests"]
    return Scenario.from_dict(_merge(tables, data))


def _without_profile_values(data: dict[str, Any], own: Any,
                            base_dir: Path | None) -> dict[str, Any]:
    """``data`` without the hardware/cost values that equal those of its own profile ``own``."""
    kind, source = _profile_source(own, base_dir, "profile")
    resolved = Scenario.from_dict(load_profile(str(source) if kind == "file" else source,
                                               field="profile")).to_dict()
    out = dict(data)
    for section in _SECTION_NAMES:
        table = data.get(section)
        if not isinstance(table, Mapping):
            continue
        kept = {k: v for k, v in table.items() if resolved[section].get(k, object()) != v}
        if kept:
            out[section] = kept
        else:
            out.pop(section)
    return out


def load_scenario(path: str | Path, profile: str | None = None) -> Scenario:
    """Load a scenario TOML file; ``profile`` (e.g. from ``--profile``) overrides the file's."""
    return scenario_from_dict(read_toml_file(path, "config"), profile,
                              base_dir=Path(path).parent)


def dump_scenario(scenario: Scenario) -> str:
    """Serialise a scenario to TOML text (loads back to an equal scenario)."""
    import tomli_w

    return tomli_w.dumps(scenario.to_dict())
