"""Autograded notebook exercises, checked against values the model computes.

The notebooks are otter-grader assignments (``notebooks/*.md`` are otter's source notebooks in
MyST form; ``tools/course.py assign`` runs ``otter assign`` on them). Each exercise is an otter
question whose public test is ``require("NN.slug", variable)`` and whose hidden test is
``require_fresh("NN.slug", variable)``. Both compare the student's value with the one this
module computes by running virtlab (small runs, cached per process): the answer key is the model
itself, so no number is stored in a test, and a failing test never shows the expected value,
only whether the answer is too high or too low.

Invariants: every exercise's expected value passes its own check; a value outside
``rel_tol``/``abs_tol`` of it fails (``tests/test_grading.py`` shows both for every exercise);
expected values depend only on the scenario and seed written here, never on the notebook's
state. :func:`require_fresh` grades with a copy of this module loaded anew from its file, so a
student's notebook that replaced ``grade`` or the cached values in the loaded module does not
change the hidden test's verdict.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["Exercise", "EXERCISES", "check", "grade", "require", "require_fresh", "expected",
           "exercises_of", "otter_name"]


@dataclass(frozen=True)
class Exercise:
    """One autograded question: a name ``NN.slug``, its text, its unit and its tolerance."""

    name: str
    question: str
    unit: str
    compute: Callable[[], float]
    rel_tol: float = 0.02
    abs_tol: float = 0.0

    def accepts(self, answer: float) -> bool:
        """True when ``answer`` is within ``rel_tol`` (relative) or ``abs_tol`` of the value."""
        value = expected(self.name)
        return math.isfinite(answer) and (
            abs(answer - value) <= max(self.rel_tol * abs(value), self.abs_tol))


EXERCISES: dict[str, Exercise] = {}


def _exercise(name: str, question: str, unit: str = "", rel_tol: float = 0.02,
              abs_tol: float = 0.0) -> Callable[[Callable[[], float]], Callable[[], float]]:
    def register(compute: Callable[[], float]) -> Callable[[], float]:
        EXERCISES[name] = Exercise(name, question, unit, compute, rel_tol, abs_tol)
        return compute
    return register


@cache
def expected(name: str) -> float:
    """The model's value for exercise ``name`` (computed once per process)."""
    return float(EXERCISES[name].compute())


def exercises_of(notebook: str) -> list[Exercise]:
    """The exercises of notebook ``NN`` (e.g. ``"03"``), in registration order."""
    return [e for e in EXERCISES.values() if e.name.split(".")[0] == notebook]


def check(name: str, answer: Any) -> None:
    """Grade ``answer`` for exercise ``name`` and print one ``[pass]``/``[fail]``/``[todo]`` line.

    ``...`` or ``None`` (the student version's placeholder) prints ``[todo]``. Returns nothing,
    so a notebook cell ending in ``check(...)`` shows only the line; :func:`grade` is the
    silent form that returns the verdict.
    """
    _grade(name, answer, print)


def grade(name: str, answer: Any) -> bool:
    """True when ``answer`` is right for exercise ``name`` (prints nothing)."""
    return _grade(name, answer, lambda _line: None)


def require(name: str, answer: Any) -> None:
    """Raise ``AssertionError`` with the ``[fail]``/``[todo]`` line unless ``answer`` is right.

    This is the public test of every notebook exercise (otter runs it as a doctest: silence is
    a pass, the raised line is what the student sees).
    """
    lines: list[str] = []
    if not _grade(name, answer, lines.append):
        raise AssertionError(lines[0])


def require_fresh(name: str, answer: Any) -> None:
    """:func:`require` with this module loaded anew from its file (the hidden test)."""
    spec = importlib.util.spec_from_file_location("_virtlab_grading_fresh", __file__)
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    # dataclasses look the defining module up in sys.modules while the class is created.
    sys.modules[spec.name] = fresh
    try:
        spec.loader.exec_module(fresh)
        fresh.require(name, answer)
    finally:
        del sys.modules[spec.name]


def otter_name(name: str) -> str:
    """The otter question name of exercise ``NN.slug``: ``qNN_slug`` (an identifier)."""
    return "q" + name.replace(".", "_").replace("-", "_")


def _grade(name: str, answer: Any, say: Callable[[str], None]) -> bool:
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; known: {', '.join(EXERCISES)}")
    exercise = EXERCISES[name]
    if answer is ... or answer is None:
        say(f"[todo] {name}: not answered yet ({exercise.question})")
        return False
    if isinstance(answer, bool):  # True would otherwise count as the number 1
        say(f"[fail] {name}: expected a number, got {answer!r}")
        return False
    try:
        value = float(answer)
    except (TypeError, ValueError):
        say(f"[fail] {name}: expected a number, got {answer!r}")
        return False
    if exercise.accepts(value):
        say(f"[pass] {name}: {value:g} {exercise.unit}".rstrip())
        return True
    direction = "too high" if value > expected(name) else "too low"
    tolerance = (f"{exercise.rel_tol:.0%}" if exercise.rel_tol else "") + (
        f"{' or ' if exercise.rel_tol else ''}{exercise.abs_tol:g} {exercise.unit}".rstrip()
        if exercise.abs_tol else "")
    say(f"[fail] {name}: {value:g} is {direction} (needed "
        + (f"within {tolerance})" if tolerance else "exactly)"))
    return False


# ---------------------------------------------------------------------------------------------
# The exercises. Scenarios are small on purpose (a notebook runs in well under a minute).
# ---------------------------------------------------------------------------------------------

def _one_request(approach: str, workload: Any, *, preset: str | None = None,
                 profile: str = "modern", **sections: dict[str, Any]) -> Any:
    """The record of one isolated request (the same as ``virtlab trace`` shows)."""
    from virtlab import run
    from virtlab.config import scenario_from_dict

    data: dict[str, Any] = {"guests": [{"name": "vm", "approach": approach, "vcpus": 2,
                                        "workloads": [workload]}]}
    data.update(sections)
    if preset is not None:
        data.setdefault("hypervisor", {})["cpu_support"] = preset
    (record,) = run(scenario_from_dict(data, profile), 0, max_requests=1, records=True).records
    return record


_RR = {"kind": "rr", "request_bytes": 100, "response_bytes": 200}
_READ = {"kind": "block", "block_bytes": 4096, "iodepth": 1}


def _summary(scenario: Any, seed: int = 0) -> Any:
    from virtlab import run

    (summary,) = run(scenario, seed).summaries
    return summary


def _rr_guest(approach: str, in_flight: int) -> Any:
    import virtlab

    return virtlab.GuestSpec(name="net", approach=approach,
                             workloads=(virtlab.RequestResponse(in_flight=in_flight),))


# 01: three ways to virtualize I/O -------------------------------------------------------------

@_exercise("01.emulated-exits", "VM exits of one isolated emulated TCP_RR request "
           "(default scenario, modern CPU)", "exits", rel_tol=0.0, abs_tol=0.0)
def _q01_exits() -> float:
    return _one_request("emulated", _RR).exits


@_exercise("01.pv-over-native", "latency of one isolated paravirtual TCP_RR request divided by "
           "the native one", "", rel_tol=0.02)
def _q01_ratio() -> float:
    return (_one_request("paravirtual", _RR).latency_us
            / _one_request("native", _RR).latency_us)


@_exercise("01.kicks-at-16", "paravirtual kicks per request with 16 transactions in flight "
           "(default scenario, 2 replications, seed 0)", "kicks/request", rel_tol=0.05,
           abs_tol=0.01)
def _q01_kicks() -> float:
    import virtlab

    scenario = dataclasses.replace(virtlab.default_scenario(),
                                   guests=(_rr_guest("paravirtual", 16),))
    (entry,) = virtlab.replicate(scenario, seed=0, replications=2).entries
    return entry.means["notifications_per_request"]


# 02: how many guests fit ---------------------------------------------------------------------

def _web_scenario(cores: int = 4) -> Any:
    import virtlab

    guest = virtlab.GuestSpec(
        name="web", approach="native", vcpus=1,
        workloads=(virtlab.RequestResponse(request_bytes=512, response_bytes=4096,
                                           server_work_us=10.0, loop="open",
                                           rate_per_s=20_000),))
    base = virtlab.default_scenario()
    return dataclasses.replace(base, duration_us=20_000.0, warmup_us=4_000.0,
                               cooldown_us=2_000.0,
                               host=dataclasses.replace(base.host, cores=cores),
                               guests=(guest,))


def _fitting(approach: str, counts: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8)) -> int:
    from virtlab.sweep import capacity

    rows = capacity(_web_scenario(), 250.0, list(counts), [approach], seed=0)
    return max([r.guests for r in rows if r.fits], default=0)


@_exercise("02.paravirtual-fit", "paravirtual web guests that fit under p99 250 µs on 4 cores",
           "guests", rel_tol=0.0, abs_tol=0.0)
def _q02_pv() -> float:
    return _fitting("paravirtual")


@_exercise("02.container-fit", "container web guests that fit under p99 250 µs on 4 cores",
           "guests", rel_tol=0.0, abs_tol=0.0)
def _q02_ct() -> float:
    return _fitting("container")


@_exercise("02.cpu-per-request", "host CPU µs per request of one paravirtual web guest "
           "(the notebook's scenario, seed 0)", "µs", rel_tol=0.03)
def _q02_cpu() -> float:
    scenario = _web_scenario().with_approach("paravirtual")
    return _summary(scenario).cpu_total_us


# 03: anatomy of an emulated device -----------------------------------------------------------

@_exercise("03.e1000-exits", "exits of one e1000 TCP_RR request with vtx-first-gen", "exits",
           rel_tol=0.0)
def _q03_e1000() -> float:
    return _one_request("emulated", _RR, preset="vtx-first-gen",
                        emulated={"nic_model": "e1000"}).exits


@_exercise("03.ide-minus-ahci", "exits of one 4 KiB IDE read minus those of one AHCI read "
           "(vtx-first-gen)", "exits", rel_tol=0.0)
def _q03_ide() -> float:
    ide = _one_request("emulated", _READ, preset="vtx-first-gen",
                       emulated={"disk_controller": "ide"}).exits
    ahci = _one_request("emulated", _READ, preset="vtx-first-gen",
                        emulated={"disk_controller": "ahci"}).exits
    return ide - ahci


@_exercise("03.apicv-saving", "µs of latency that modern-apicv saves over modern on one e1000 "
           "TCP_RR request", "µs", rel_tol=0.02, abs_tol=0.05)
def _q03_apicv() -> float:
    modern = _one_request("emulated", _RR, preset="modern", emulated={"nic_model": "e1000"})
    apicv = _one_request("emulated", _RR, preset="modern-apicv",
                         emulated={"nic_model": "e1000"})
    return modern.latency_us - apicv.latency_us


# 04: the virtqueue ---------------------------------------------------------------------------

@_exercise("04.need-event", "does moving avail.idx from 2 to 6 cross avail_event 3 (1/0)?",
           rel_tol=0.0)
def _q04_need() -> float:
    from virtlab.paths.virtqueue import vring_need_event

    return float(vring_need_event(3, 6, 2))


@_exercise("04.busy-kicks", "kicks for 5 one-chain bursts while the device stays busy "
           "(event index)", "kicks", rel_tol=0.0)
def _q04_busy() -> float:
    from virtlab.paths.virtqueue import SplitVirtqueue

    ring, kicks = SplitVirtqueue(16), 0
    for i in range(5):
        ring.add([64], [], token=i)
        if ring.kick_prepare():
            kicks += 1
            ring.disable_notify()
        ring.pop()
    return kicks


@_exercise("04.irqs-at-60k", "paravirtual interrupts per request at 60,000 TCP_RR requests/s "
           "(open loop, 2 vCPUs, 20 ms, 3 replications, seed 0)", "interrupts/request",
           rel_tol=0.03, abs_tol=0.01)
def _q04_kicks() -> float:
    import virtlab
    from virtlab.config import scenario_from_dict

    scenario = scenario_from_dict({
        "duration_us": 20_000.0, "warmup_us": 2_000.0,
        "guests": [{"name": "net", "approach": "paravirtual", "vcpus": 2,
                    "workloads": [{"kind": "rr", "loop": "open", "rate_per_s": 60_000}]}]})
    (entry,) = virtlab.replicate(scenario, seed=0, replications=3).entries
    return entry.means["interrupts_per_request"]


# 05: Xen split drivers -----------------------------------------------------------------------

def _xen_entry(paravirtual: dict[str, Any], workload: dict[str, Any]) -> Any:
    import virtlab
    from virtlab.config import scenario_from_dict

    scenario = scenario_from_dict({
        "duration_us": 20_000.0, "warmup_us": 2_000.0, "paravirtual": paravirtual,
        "guests": [{"name": "vm", "approach": "paravirtual", "vcpus": 2,
                    "workloads": [workload]}]})
    (entry,) = virtlab.replicate(scenario, seed=0, replications=3).entries
    return entry


_STREAM = {"kind": "stream", "direction": "transmit", "message_bytes": 65536}


@_exercise("05.copy-minus-map", "extra backend µs per 64 KiB message with grant copy vs map",
           "µs", rel_tol=0.03, abs_tol=0.05)
def _q05_copy() -> float:
    return (_xen_entry({"backend": "xen", "xen_grant_mode": "copy"}, _STREAM)
            .means["cpu_backend_us"]
            - _xen_entry({"backend": "xen", "xen_grant_mode": "map"}, _STREAM)
            .means["cpu_backend_us"])


@_exercise("05.persistent-saving", "backend µs per 64 KiB disk request saved by persistent "
           "grants", "µs", rel_tol=0.03, abs_tol=0.05)
def _q05_persistent() -> float:
    block = {"kind": "block", "block_bytes": 65536, "iodepth": 16}
    return (_xen_entry({"backend": "xen", "xen_persistent_grants": False}, block)
            .means["cpu_backend_us"]
            - _xen_entry({"backend": "xen", "xen_persistent_grants": True}, block)
            .means["cpu_backend_us"])


@_exercise("05.xen-over-vhost", "mean TCP_RR latency (1 in flight) of Xen over vhost", "",
           rel_tol=0.02)
def _q05_ratio() -> float:
    rr = {"kind": "rr", "in_flight": 1}
    return (_xen_entry({"backend": "xen"}, rr).means["latency_mean_us"]
            / _xen_entry({"backend": "vhost"}, rr).means["latency_mean_us"])


# 06: containers ------------------------------------------------------------------------------

@_exercise("06.veth-extra", "extra µs of one isolated TCP_RR transaction in a container over "
           "native", "µs", rel_tol=0.02, abs_tol=0.02)
def _q06_veth() -> float:
    return _one_request("container", _RR).latency_us - _one_request("native", _RR).latency_us


@_exercise("06.openvz-share", "share of one core for OpenVZ cpuunits 3000 against 1000 "
           "(simulated, 2 s window)", "", rel_tol=0.0, abs_tol=0.01)
def _q06_openvz() -> float:
    from virtlab import run
    from virtlab.config import scenario_from_dict

    busy = [{"kind": "cpu", "name": "busy"}]
    data = {"duration_us": 3_500_000.0, "warmup_us": 1_500_000.0, "host": {"cores": 1},
            "scheduler": {"host": "openvz"},
            "guests": [{"name": "a", "approach": "container",
                        "sched": {"openvz_cpuunits": 3000}, "workloads": busy},
                       {"name": "b", "approach": "container",
                        "sched": {"openvz_cpuunits": 1000}, "workloads": busy}]}
    return run(scenario_from_dict(data), 0).summaries[0].guest_cpu_pct / 100


@_exercise("06.noisy-p99", "factor by which a 10x-weight CPU hog raises a TCP_RR container's "
           "p99 over equal weights (CFS, one core, 2 replications)", "", rel_tol=0.05)
def _q06_noisy() -> float:
    import virtlab
    from virtlab.config import scenario_from_dict

    def p99(hog_sched: dict[str, Any]) -> float:
        data = {"duration_us": 200_000.0, "warmup_us": 50_000.0, "host": {"cores": 1},
                "scheduler": {"host": "cfs"},
                "guests": [{"name": "web", "approach": "container", "vcpus": 1,
                            "workloads": [{"kind": "rr", "name": "rr", "in_flight": 1}]},
                           {"name": "hog", "approach": "container", "vcpus": 1,
                            "sched": hog_sched,
                            "workloads": [{"kind": "cpu", "name": "busy"}]}]}
        result = virtlab.replicate(scenario_from_dict(data), seed=0, replications=2)
        return result.entries[0].means["latency_p99_us"]

    return p99({"weight": 1000}) / p99({})


# 07: what changed ----------------------------------------------------------------------------

def _era_frame(era: str, workload: dict[str, Any]) -> Any:
    import virtlab
    from virtlab.config import scenario_from_dict

    scenario = scenario_from_dict({
        "duration_us": 20_000.0, "warmup_us": 2_000.0,
        "guests": [{"name": "vm", "approach": "native", "vcpus": 1, "workloads": [workload]}]},
        era)
    if workload["kind"] == "block" and scenario.disk.kind == "rotating":
        scenario = dataclasses.replace(scenario, duration_us=1_000_000.0, warmup_us=100_000.0)
    return virtlab.compare(scenario, ["native", "emulated"], seed=0,
                           replications=3).to_frame().set_index("approach")


@_exercise("07.emulated-rr-2007", "emulated/native TCP_RR throughput on era-2007", "",
           rel_tol=0.02)
def _q07_rr() -> float:
    frame = _era_frame("era-2007", {"kind": "rr", "in_flight": 1})
    return frame.loc["emulated", "throughput_per_s"] / frame.loc["native", "throughput_per_s"]


@_exercise("07.disk-2003", "emulated/native 4 KiB random-read throughput on testbed-2003", "",
           rel_tol=0.02)
def _q07_disk() -> float:
    frame = _era_frame("testbed-2003", {"kind": "block", "block_bytes": 4096, "iodepth": 4})
    return frame.loc["emulated", "throughput_per_s"] / frame.loc["native", "throughput_per_s"]


@_exercise("07.emulated-cpu-modern", "emulated/native host CPU per TCP_RR request, modern", "",
           rel_tol=0.02)
def _q07_cpu() -> float:
    frame = _era_frame("modern", {"kind": "rr", "in_flight": 1})
    return frame.loc["emulated", "cpu_total_us"] / frame.loc["native", "cpu_total_us"]


# 08: capacity planning -----------------------------------------------------------------------

def _cache_scenario() -> Any:
    import virtlab

    guest = virtlab.GuestSpec(
        name="kv", approach="native", vcpus=1,
        workloads=(virtlab.RequestResponse(request_bytes=128, response_bytes=1024,
                                           server_work_us=8.0, loop="open",
                                           rate_per_s=25_000),))
    base = virtlab.default_scenario()
    return dataclasses.replace(base, duration_us=15_000.0, warmup_us=3_000.0,
                               cooldown_us=2_000.0,
                               host=dataclasses.replace(base.host, cores=4), guests=(guest,))


@_exercise("08.container-fit", "container key-value guests that fit under p99 200 µs on 4 cores "
           "(one replication per count, 1-8)", "guests", rel_tol=0.0)
def _q08_fit() -> float:
    from virtlab.sweep import capacity

    rows = capacity(_cache_scenario(), 200.0, list(range(1, 9)), ["container"], seed=0)
    return max([r.guests for r in rows if r.fits], default=0)


@_exercise("08.native-cores-busy", "host utilisation with 4 native key-value guests (seed 0)",
           "", rel_tol=0.0, abs_tol=0.01)
def _q08_busy() -> float:
    from virtlab import run
    from virtlab.sweep import with_guest_copies

    return run(with_guest_copies(_cache_scenario(), 4).with_approach("native"), 0).utilisation


@_exercise("08.littles-L", "mean requests in the system of one paravirtual key-value guest",
           "requests", rel_tol=0.03)
def _q08_little() -> float:
    import virtlab

    (entry,) = virtlab.replicate(_cache_scenario().with_approach("paravirtual"), seed=0,
                                 replications=3).entries
    return entry.means["throughput_per_s"] * entry.means["latency_mean_us"] / 1e6
