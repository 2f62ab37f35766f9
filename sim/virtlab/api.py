r"""The command line as Python calls: the same inputs, the same checks, the same numbers.

Each ``virtlab compare``/``run`` flag has a keyword of the same name here, read by the very
code the command line uses (so a bad value raises the same :class:`~virtlab.errors.ConfigError`
naming the same field, and the same inputs give identical results)::

    import virtlab.api as vl

    # virtlab compare --profile testbed-2003 --set hypervisor.posted_interrupts=true \
    #     --approaches paravirtual,emulated -r 5 --seed 7
    result = vl.compare(profile="testbed-2003", set={"hypervisor.posted_interrupts": True},
                        approaches=["paravirtual", "emulated"], replications=5, seed=7)
    result.to_frame()           # one row per approach and workload (docs/results.md)
    vl.warnings(result)         # the lines the command line prints on stderr

    # virtlab run --config examples/netperf-rr.toml --duration 50ms
    result = vl.run("examples/netperf-rr.toml", duration="50ms")

    # Build once, then run: a Scenario, with the profile applied and the overrides checked.
    scenario = vl.scenario(profile="testbed-2014", set={"guests[0].vcpus": 4})
    vl.compare(scenario, approaches="native,paravirtual")

``set`` takes a mapping of field paths (spelled as ``--set`` spells them:
``guests[0].workloads[0].in_flight``) to Python values, or ``"KEY=VALUE"`` strings exactly as
on the command line. Durations are strings with a unit (``"30ms"``, ``"0.5s"``, ``"2000us"``)
or numbers of µs. ``approaches`` is a list, a comma-separated string, ``"all"`` (compare's
default) or ``None`` (keep each guest's own, as ``run`` does).

To apply a profile to a scenario you already hold, use :func:`with_profile`: its hardware and
cost values are replaced by the profile's, except the ones you changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from virtlab.config import Scenario
from virtlab.errors import ConfigError
from virtlab.experiment import Comparison

__all__ = ["scenario", "compare", "run", "with_profile", "warnings"]

_NOT_GIVEN: Any = object()


def _set_strings(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[str]:
    """``--set`` assignments from a mapping of Python values or from ``KEY=VALUE`` strings."""
    from virtlab.report import toml_value

    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        out = []
        for key, value in overrides.items():
            if not isinstance(key, str):
                raise ConfigError("set", f"keys are field paths such as guests[0].vcpus, got "
                                         f"{key!r}")
            plain = list(value) if isinstance(value, tuple) else value
            try:
                out.append(f"{key}={toml_value(plain)}")
            except (TypeError, ValueError) as err:
                raise ConfigError(f"set {key}", f"cannot be written as a TOML value: "
                                                f"{value!r} ({err})") from None
        return out
    return [str(item) for item in overrides]


def _duration(value: str | float | None, flag: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(flag, f"must be a duration such as '30ms' or a number of µs, "
                                f"got {value!r}")
    return f"{float(value)!r}us"


def scenario(config: str | None = None, *, profile: str | None = None,
             set: Mapping[str, Any] | Iterable[str] | None = None,  # noqa: A002 - the flag
             duration: str | float | None = None, warmup: str | float | None = None,
             cpu_support: str | None = None) -> Scenario:
    """The scenario ``virtlab run --config CONFIG --profile ... --set ...`` would run.

    Without ``config``, the built-in scenario (what ``virtlab compare`` runs). ``cpu_support``
    is ``--cpu-support``: ``hypervisor.cpu_support``, applied after ``set`` as the flag is.
    """
    from virtlab.cli import build_scenario

    sets = _set_strings(set)
    if cpu_support is not None:
        from virtlab.cpusupport import PRESET_NAMES

        if cpu_support not in PRESET_NAMES:
            raise ConfigError("--cpu-support", f"must be one of {', '.join(PRESET_NAMES)}, "
                                               f"got {cpu_support!r}")
        sets.append(f'hypervisor.cpu_support="{cpu_support}"')
    return build_scenario(config, profile, sets, _duration(duration, "--duration"),
                          _duration(warmup, "--warmup"))


def _approaches(value: str | Sequence[str] | None) -> list[str] | None:
    from virtlab.cli import approach_list
    from virtlab.paths import APPROACHES

    if value is None:
        return None
    if isinstance(value, str):
        return list(APPROACHES) if value == "all" else approach_list(value)
    return approach_list(",".join(value))


def _execute(base: Scenario | str | None, approaches: list[str] | None, *, seed: int,
             replications: int, jobs: int | None, force: bool, build: dict[str, Any]) -> Comparison:
    import argparse

    from virtlab.cli import _check_counts, check_budget
    from virtlab.experiment import compare as run_approaches

    _check_counts(argparse.Namespace(seed=seed, replications=replications, jobs=jobs))
    if isinstance(base, Scenario):
        extra = [k for k, v in build.items() if v is not None and k != "profile"]
        if extra:
            raise ConfigError(extra[0], "give either a Scenario or the flags that build one "
                                        "(config, set, duration, ...), not both; a profile "
                                        "may be applied to a Scenario")
        built = with_profile(base, build["profile"]) if build["profile"] else base
    else:
        built = scenario(base, **build)
    variants = [built] if approaches is None else [built.with_approach(a) for a in approaches]
    check_budget(variants, replications, jobs, force)
    return run_approaches(built, approaches, seed=seed, replications=replications, jobs=jobs)


def compare(scenario_or_config: Scenario | str | None = None, *,
            approaches: str | Sequence[str] | None = "all", seed: int = 0,
            replications: int = 3, jobs: int | None = None, force: bool = False,
            profile: str | None = None, set: Any = None,  # noqa: A002 - the flag's name
            duration: str | float | None = None, warmup: str | float | None = None,
            cpu_support: str | None = None) -> Comparison:
    """``virtlab compare``: every guest switched to each approach in turn (default: all five).

    ``scenario_or_config`` is a :class:`~virtlab.config.Scenario`, a scenario file (``--config``)
    or None (the built-in scenario); the other keywords are the flags of the same names.
    ``force`` is ``--force`` (run even above the size budget).
    """
    build = {"profile": profile, "set": set, "duration": duration, "warmup": warmup,
             "cpu_support": cpu_support}
    return _execute(scenario_or_config, _approaches(approaches), seed=seed,
                    replications=replications, jobs=jobs, force=force, build=build)


def run(scenario_or_config: Scenario | str, *, seed: int = 0, replications: int = 3,
        jobs: int | None = None, force: bool = False, profile: str | None = None,
        set: Any = None,  # noqa: A002 - the flag's name
        duration: str | float | None = None, warmup: str | float | None = None,
        cpu_support: str | None = None) -> Comparison:
    """``virtlab run --config FILE``: the scenario as written, each guest with its approach."""
    build = {"profile": profile, "set": set, "duration": duration, "warmup": warmup,
             "cpu_support": cpu_support}
    return _execute(scenario_or_config, None, seed=seed, replications=replications, jobs=jobs,
                    force=force, build=build)


def with_profile(base: Scenario, profile: str) -> Scenario:
    """``base`` on another profile (see :func:`virtlab.config.scenario_from_dict`).

    Its hardware and cost values become the profile's, except those that differ from
    ``base``'s own profile (your changes, kept). Guests, workloads and the measurement
    window are kept.
    """
    from virtlab.config import scenario_from_dict

    return scenario_from_dict(base.to_dict(), profile)


def warnings(result: Comparison, *, base: Scenario | None = None,
             approaches: Sequence[str] | None = ()) -> list[str]:
    """The warnings the command line prints for ``result`` (without ``virtlab: warning:``).

    ``approaches=None`` (for a :func:`run` result) also names changed parameters of approaches
    no guest uses (against ``base``).
    """
    from virtlab.advice import comparison_warnings

    first = result.results[0]
    return comparison_warnings(result, first.scenario, replications=first.replications,
                               base=base, approaches=approaches)
