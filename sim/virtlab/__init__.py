"""virtlab: a discrete-event simulation and teaching lab for I/O virtualization.

Simulated time is measured in **microseconds** (``float``) everywhere; quantities carry their
unit in their names (``exit_cost_us``, ``line_rate_gbps``).

Public API
----------
========================  ==============================================================
``Scenario``              frozen, validated description of hosts, guests and workloads
``GuestSpec``             one guest: its approach, vCPUs and workloads
``RequestResponse``       netperf TCP_RR-like workload
``BulkStream``            ttcp/nuttcp-like bulk stream
``BlockIO``               fio-like block workload
``default_scenario``      the scenario the main comparison runs
``load_scenario``         read a scenario TOML file (with its profile)
``dump_scenario``         write a scenario as TOML
``run``                   simulate once: ``run(scenario, seed=0) -> RunResult``
``replicate``             simulate R independent replications: ``-> Result``
``compare``               run several approaches with common random numbers
``RunResult``             one run's records, summaries and provenance
``Result``                replications with means and confidence intervals
``Comparison``            results per approach; ``to_frame()``, ``to_json()``
``APPROACHES``            the five approach names
========================  ==============================================================

``virtlab.api`` mirrors the command line (profiles, ``--set`` overrides, approaches,
replications, jobs) with its checks and its numbers: see docs/python-api.md.
"""

from __future__ import annotations

from virtlab.version import __version__ as __version__  # re-exported

# The public names load on first use (PEP 562), so that ``import virtlab`` -- and with it the
# ``virtlab`` program's start -- does not import SimPy, NumPy and pandas before the command line
# has installed its signal handlers (a Ctrl-C during start-up then stops quietly).
_LAZY = {
    "GuestSpec": "virtlab.config", "Scenario": "virtlab.config",
    "default_scenario": "virtlab.config", "dump_scenario": "virtlab.config",
    "load_scenario": "virtlab.config",
    "Comparison": "virtlab.experiment", "Result": "virtlab.experiment",
    "compare": "virtlab.experiment", "replicate": "virtlab.experiment",
    "RunResult": "virtlab.model", "run": "virtlab.model",
    "APPROACHES": "virtlab.paths",
    "BlockIO": "virtlab.workload", "BulkStream": "virtlab.workload",
    "RequestResponse": "virtlab.workload",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'virtlab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Scenario",
    "GuestSpec",
    "RequestResponse",
    "BulkStream",
    "BlockIO",
    "default_scenario",
    "load_scenario",
    "dump_scenario",
    "run",
    "replicate",
    "compare",
    "RunResult",
    "Result",
    "Comparison",
    "APPROACHES",
]
