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
"""

from __future__ import annotations

from virtlab.version import __version__ as __version__  # re-exported

from virtlab.config import GuestSpec, Scenario, default_scenario, dump_scenario, load_scenario
from virtlab.experiment import Comparison, Result, compare, replicate
from virtlab.model import RunResult, run
from virtlab.paths import APPROACHES
from virtlab.workload import BlockIO, BulkStream, RequestResponse

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
