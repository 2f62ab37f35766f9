"""``virtlab validate``: the model against published end-to-end comparisons.

Each :class:`Comparison` is a published result copied here with its original citation: a
measured value for an approach and for native Linux on the same testbed, hence a ratio to
native. The model runs the same workload under both approaches (the profile that describes the
testbed, nothing fitted to the figure) and its ratio is judged by one rule:

    **pass** when the simulated ratio is within ±25 % of the published ratio and on the same
    side of 1.0. A ratio within ±0.5 % of 1.0 (inside the published runs' own noise) counts
    as *at* 1.0 and matches either side.

These results are for validation only: no parameter of virtlab may be chosen to reproduce one
(docs/validation.md lists how far the model lands, misses included, with the suspected
mechanism of each miss). ``RECORDED_PASSES`` is the pass count of the fast form the test suite
runs; a change that lowers it fails the tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Comparison", "Outcome", "COMPARISONS", "RECORDED_PASSES", "TOLERANCE",
           "judge", "run_comparison", "validate", "to_json", "to_markdown"]

#: Allowed relative distance between the simulated and the published ratio.
TOLERANCE = 0.25
#: Ratios this close to 1.0 are "at 1.0" for the side test (published runs' noise).
AT_ONE = 0.005
#: Passes of ``validate(fast=True)`` when last recorded (the test suite's floor): 11 of 14
#: (F14-tcp-rr-docker-nat, added as a miss, says what its NAT cost rests on).
#: Moves since 12: B03-ttcp-xen became a miss once the transmitting guest takes its peer's
#: ACKs (issue 10); F14-tcp-rr-kvm became a miss once ``host.stack_pkt_us`` and
#: ``nic.peer_stack_us`` came from a per-layer measurement (S210) instead of a fit to F14's
#: native TCP_RR (the native baseline fell from 37.4 to 20.7 µs while the KVM path's overhead
#: over it stayed 29.4 µs; F14: 30.4 µs); B03-ttcp-vmware became a pass once every guest
#: system call on the path pays binary translation's surcharge (0.447 -> 0.389). Each miss's
#: miss_mechanism says why.
RECORDED_PASSES = 11

_F14 = ("Felter, Ferreira, Rajamony, Rubio, 'An Updated Performance Comparison of Virtual "
        "Machines and Linux Containers', IBM RC25482 (2014), ISPASS 2015")
_B03 = "Barham et al., 'Xen and the Art of Virtualization', SOSP 2003"
_NS = ("virtlab project measurement, getpid in C on a 2-vCPU Linux VM, host vs inside "
       "UTS+PID+mount+net+IPC namespaces (docs/namespaces.md, reference VM), 2026")


@dataclass(frozen=True)
class Comparison:
    """One published comparison: ``approach`` against native on one testbed.

    ``metric`` is ``"throughput"`` (requests per second) or ``"latency"`` (mean µs);
    ``published_ratio`` is the approach's value over native's. ``scenario`` is a scenario
    mapping (as a TOML file would give) with one guest; ``fast_duration_us`` shortens it for
    the test suite.
    """

    key: str
    citation: str
    tag: str
    what: str
    published: str
    published_ratio: float
    approach: str
    metric: str
    scenario: dict[str, Any]
    fast_duration_us: float
    miss_mechanism: str = ""


def _guest(workload: dict[str, Any], vcpus: int = 1) -> list[dict[str, Any]]:
    return [{"name": "sut", "approach": "native", "vcpus": vcpus, "workloads": [workload]}]


def _f14(workload: dict[str, Any], duration_us: float, **extra: Any) -> dict[str, Any]:
    return {"profile": "testbed-2014", "duration_us": duration_us,
            "warmup_us": duration_us / 10, "guests": _guest(workload), **extra}


_RR = {"kind": "rr", "request_bytes": 100, "response_bytes": 200, "in_flight": 1}
_TX = {"kind": "stream", "direction": "transmit", "message_bytes": 8192}
_RX = {"kind": "stream", "direction": "receive", "message_bytes": 8192}
_SEQREAD = {"kind": "block", "pattern": "sequential", "read_fraction": 1.0,
            "block_bytes": 1 << 20, "iodepth": 2}
# 400 ms: a 1 MiB write holds the interface ~1.3 ms, so a 100 ms window counts ~71 of them and
# one completion more or less (the start-up phase) is 1.4 %, the size of the published effect.
_SEQWRITE = {"kind": "block", "pattern": "sequential", "read_fraction": 0.0,
             "block_bytes": 1 << 20, "iodepth": 16}
# SPECweb99-like: one process per connection (Apache 1.3 prefork), ~15 KiB files from the
# page cache, a new connection per request [assumptions: the workload's shape, not its result].
_WEB99 = {"kind": "web", "response_kib": 15.0, "keep_alive": False, "connections": 16,
          "threads": 16, "source": "page_cache"}
_B03_WEB = {"profile": "testbed-2003", "duration_us": 200_000.0, "warmup_us": 20_000.0,
            "guests": _guest(_WEB99)}
_B03_TTCP = {"profile": "testbed-2003", "duration_us": 100_000.0, "warmup_us": 10_000.0,
             "guests": _guest(_TX)}

COMPARISONS: tuple[Comparison, ...] = (
    Comparison("F14-tcp-rr-kvm", _F14, "[data]", "netperf TCP_RR 100/200 B, 1 in flight, "
               "KVM virtio + vhost", "37.58 µs native, 67.94 µs KVM", 67.94 / 37.58,
               "paravirtual", "latency", _f14(_RR, 30_000.0), 10_000.0,
               "the native baseline is short, not the KVM path: KVM adds 29.4 µs per "
               "transaction over native in the model and 30.4 µs in F14, but the model's native "
               "transaction takes 20.7 µs against F14's 37.6 µs, its per-packet stack cost "
               "being measured from below (S210) rather than fitted. The missing 17 µs are in "
               "no modelled cost; suspected: the ConnectX-2 NICs' interrupt moderation, "
               "idle-state exits of both hosts' cores while they wait, netperf's own "
               "user-space work, and PCIe and DMA time beyond wire_latency_us (an assumption)"),
    Comparison("F14-tcp-rr-docker", _F14, "[text]", "netperf TCP_RR, Docker without NAT",
               "'without NAT identical to native'", 1.0, "container", "latency",
               _f14(_RR, 30_000.0), 10_000.0),
    Comparison("F14-tcp-rr-docker-nat", _F14, "[text]", "netperf TCP_RR, Docker with NAT "
               "(port mapping)", "'NAT doubles latency'", 2.0, "container", "latency",
               _f14(_RR, 30_000.0, container={"nat": True}), 10_000.0,
               "the model's NAT is connection tracking and address rewriting at "
               "container.nat_us = 2 µs per packet per direction, an assumption: with one "
               "packet each way per transaction it adds 4.0 µs to a 20.7 µs native "
               "transaction (the veth hop adds 1.2 µs more). A doubling needs about 10 µs per "
               "packet pass; suspected: the "
               "netfilter hooks Docker's port mapping puts on every packet (PREROUTING DNAT, "
               "FORWARD, POSTROUTING MASQUERADE, conntrack lookup and confirm) and the docker0 "
               "bridge's own pass cost more than assumed, as does losing GRO across the bridge; "
               "no micro-benchmark in docs/sources.md measures them, so nat_us stays an "
               "assumption"),
    Comparison("F14-stream-tx-kvm", _F14, "[data]", "nuttcp bulk TCP, SUT transmits, KVM",
               "9,348 Mb/s native, 9,294 Mb/s KVM", 9294 / 9348, "paravirtual", "throughput",
               _f14(_TX, 20_000.0), 5_000.0),
    Comparison("F14-stream-tx-docker", _F14, "[data]", "nuttcp bulk TCP, SUT transmits, "
               "Docker (NAT)", "9,348 Mb/s native, 9,330 Mb/s Docker", 9330 / 9348,
               "container", "throughput", _f14(_TX, 20_000.0), 5_000.0),
    Comparison("F14-stream-rx-kvm", _F14, "[data]", "nuttcp bulk TCP, SUT receives, KVM",
               "9,340 Mb/s native, 9,265 Mb/s KVM", 9265 / 9340, "paravirtual", "throughput",
               _f14(_RX, 20_000.0), 5_000.0),
    Comparison("F14-fio-seqread-kvm", _F14, "[data]", "fio sequential read 1 MiB, 2 "
               "outstanding, KVM", "806.9 MB/s native, 801.9 MB/s KVM", 801.9 / 806.9,
               "paravirtual", "throughput", _f14(_SEQREAD, 60_000.0), 30_000.0),
    Comparison("F14-fio-seqwrite-kvm", _F14, "[data]", "fio sequential write 1 MiB, 16 "
               "outstanding, KVM", "751.0 MB/s native, 740.2 MB/s KVM", 740.2 / 751.0,
               "paravirtual", "throughput", _f14(_SEQWRITE, 400_000.0), 50_000.0),
    Comparison("F14-fio-seqwrite-docker", _F14, "[data]", "fio sequential write 1 MiB, 16 "
               "outstanding, Docker", "751.0 MB/s native, 752.3 MB/s Docker", 752.3 / 751.0,
               "container", "throughput", _f14(_SEQWRITE, 400_000.0), 50_000.0),
    Comparison("B03-ttcp-xen", _B03, "[summary]", "ttcp TCP transmit, MTU 1500, XenoLinux",
               "897 Mb/s native, 897 Mb/s Xen", 1.0, "paravirtual", "throughput",
               _B03_TTCP, 30_000.0,
               "with the peer's ACKs taken (one per two MTU segments: 3 per 8 KiB write), the "
               "testbed-2003 native stack already uses about 94 % of the one CPU at line rate "
               "(its per-packet costs, stack_pkt_us 6 µs and irq_us 2 µs, are assumptions), "
               "and Xen 1.x pays about twice native's cost per ACK (Xen's NIC interrupt and "
               "demultiplexing, a page flip and TLB flush for a header-only packet, the upcall "
               "into the guest), so the Xen column turns CPU-bound. Parity in 2003 means "
               "native had CPU to spare: the 2003 per-packet costs are suspected too high, and "
               "the Tigon 3's interrupt coalescing is not modelled"),
    Comparison("B03-ttcp-vmware", _B03, "[summary]", "ttcp TCP transmit, VMware Workstation "
               "3.2 (emulated pcnet32)", "897 Mb/s native, 291 Mb/s VMware", 291 / 897,
               "emulated", "throughput", _B03_TTCP, 30_000.0,
               "the model's hosted-VMM path loses less than VMware Workstation 3.2 did: "
               "Sugerman 2001's world-switch costs, measured at 733 MHz, are applied in "
               "cycles at 2.4 GHz, and the host OS's scheduling of the VMApp process is not "
               "modelled"),
    Comparison("B03-specweb-xen", _B03, "[text]", "SPEC WEB99-like web serving on XenoLinux "
               "(web workload, testbed-2003)", "'within 1 % of native'", 0.99, "paravirtual",
               "throughput", _B03_WEB, 60_000.0,
               "the Xen split-driver path's per-packet work on the one shared CPU (the driver "
               "domain runs on the guest's core): a new connection per request makes ~4 "
               "messages and their event-channel notifications per page served; the compute "
               "side is small (XenoLinux's direct paging: 0.75; priced as binary translation "
               "with shadow paging instead: 0.72). The SPECweb99 file mix (larger files, "
               "fewer packets per byte) is only approximated"),
    Comparison("B03-specweb-vmware", _B03, "[text]", "SPEC WEB99-like web serving on VMware "
               "Workstation (bound: 'less than a third of native's clients')",
               "'less than a third'", 1 / 3, "emulated", "throughput", _B03_WEB, 60_000.0,
               "the published figure is an upper bound on clients, not a throughput ratio"),
    Comparison("NS-getpid-container", _NS, "[data]", "getpid syscall, host vs inside five "
               "namespaces", "141.1 ns vs 141.5 ns", 141.5 / 141.1, "container", "latency",
               {"duration_us": 2_000.0, "warmup_us": 200.0,
                "guests": _guest({"kind": "server", "connections": 1,
                                  "steps": [{"kind": "syscall", "count": 1.0}]})}, 1_000.0),
)


@dataclass(frozen=True)
class Outcome:
    """The model's value of one comparison and the verdict."""

    key: str
    approach: str
    metric: str
    published_ratio: float
    native_value: float
    approach_value: float
    model_ratio: float
    deviation: float
    passed: bool
    error: str = ""


def judge(model_ratio: float, published_ratio: float) -> tuple[float, bool]:
    """Relative deviation of the model's ratio from the published one, and the verdict."""
    if not math.isfinite(model_ratio) or model_ratio <= 0.0:
        return math.nan, False
    deviation = (model_ratio - published_ratio) / published_ratio

    def side(x: float) -> int:
        return 0 if abs(x - 1.0) <= AT_ONE else (1 if x > 1.0 else -1)

    same_side = side(model_ratio) == side(published_ratio) or 0 in (side(model_ratio),
                                                                  side(published_ratio))
    return deviation, abs(deviation) <= TOLERANCE and same_side


def _value(comparison: Comparison, approach: str, fast: bool, seed: int) -> float:
    from virtlab.config import scenario_from_dict
    from virtlab.model import run

    data = json.loads(json.dumps(comparison.scenario))
    if fast:
        data["duration_us"] = comparison.fast_duration_us
        data["warmup_us"] = comparison.fast_duration_us / 10
    scenario = scenario_from_dict(data).with_approach(approach)
    summary = run(scenario, seed=seed).summaries[0]
    return summary.latency_mean_us if comparison.metric == "latency" else \
        summary.throughput_per_s


def run_comparison(comparison: Comparison, *, fast: bool = False, seed: int = 0) -> Outcome:
    """Simulate one comparison (native and the approach, same seed) and judge it."""
    try:
        native = _value(comparison, "native", fast, seed)
        other = _value(comparison, comparison.approach, fast, seed)
    except Exception as err:  # a failed comparison is reported, the others still run
        return Outcome(comparison.key, comparison.approach, comparison.metric,
                       comparison.published_ratio, math.nan, math.nan, math.nan, math.nan,
                       False, f"{type(err).__name__}: {err}")
    ratio = other / native if native > 0.0 else math.nan
    deviation, passed = judge(ratio, comparison.published_ratio)
    return Outcome(comparison.key, comparison.approach, comparison.metric,
                   comparison.published_ratio, native, other, ratio, deviation, passed)


def validate(*, fast: bool = False, seed: int = 0, keys: tuple[str, ...] | None = None,
             progress: Callable[[int, int, str], None] | None = None) -> list[Outcome]:
    """Run every comparison (or those named in ``keys``) and return the outcomes.

    ``progress(done, total, key)`` is called before each comparison runs.
    """
    chosen = [c for c in COMPARISONS if keys is None or c.key in keys]
    outcomes = []
    for index, comparison in enumerate(chosen):
        if progress is not None:
            progress(index, len(chosen), comparison.key)
        outcomes.append(run_comparison(comparison, fast=fast, seed=seed))
    return outcomes


def to_json(outcomes: list[Outcome]) -> str:
    """The outcomes as one JSON document (NaN written as null)."""
    rows = []
    for o in outcomes:
        row = dataclasses.asdict(o)
        rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                     for k, v in row.items()})
    return json.dumps({"rule": f"simulated ratio within ±{TOLERANCE:.0%} of the published "
                               f"ratio and on the same side of 1.0",
                       "passed": sum(o.passed for o in outcomes), "total": len(outcomes),
                       "comparisons": rows}, indent=2)


def table(outcomes: list[Outcome]) -> str:
    """A plain-text table of the outcomes."""
    lines = [f"{'comparison':<26} {'approach':<12} {'metric':<10} {'published':>9} "
             f"{'model':>8} {'off by':>8}  verdict"]
    for o in outcomes:
        verdict = "pass" if o.passed else ("ERROR " + o.error if o.error else "MISS")
        lines.append(f"{o.key:<26} {o.approach:<12} {o.metric:<10} {o.published_ratio:>9.3f} "
                     f"{o.model_ratio:>8.3f} {o.deviation:>+8.1%}  {verdict}")
    lines.append(f"{sum(o.passed for o in outcomes)} of {len(outcomes)} pass (ratio to native "
                 f"within ±{TOLERANCE:.0%} of the published ratio, same side of 1.0)")
    return "\n".join(lines)


def to_markdown(outcomes: list[Outcome], command: str) -> str:
    """docs/validation.md: every comparison, how far the model lands, and suspected causes."""
    by_key = {c.key: c for c in COMPARISONS}
    out = ["# Validation: the model against published end-to-end results", "",
           "Generated by `" + command + "`; do not edit by hand.", "",
           "These results are for **validation only**: no parameter is chosen to reproduce "
           "one. Rule: the simulated ratio to native must lie within "
           f"±{TOLERANCE:.0%} of the published ratio and on the same side of 1.0 (a ratio "
           f"within ±{AT_ONE:.1%} of 1.0 is *at* 1.0 and matches either side).", "",
           f"**{sum(o.passed for o in outcomes)} of {len(outcomes)} pass.**", "",
           "| comparison | what | published | published ratio | model ratio | off by | "
           "verdict |", "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        c = by_key[o.key]
        verdict = "pass" if o.passed else "**miss**"
        out.append(f"| {o.key} | {c.what} | {c.published} {c.tag} | {o.published_ratio:.3f} "
                   f"| {o.model_ratio:.3f} | {o.deviation:+.1%} | {verdict} |")
    out += ["", "## Misses and the mechanism suspected", ""]
    misses = [o for o in outcomes if not o.passed]
    if not misses:
        out.append("None.")
    for o in misses:
        c = by_key[o.key]
        why = c.miss_mechanism or "not yet analysed"
        out.append(f"* **{o.key}** (model {o.model_ratio:.3f} vs published "
                   f"{o.published_ratio:.3f}): {why}.")
    close = [o for o in outcomes if o.passed and abs(o.deviation) > 0.8 * TOLERANCE]
    if close:
        out += ["", "## Close calls", "",
                "Passes within a fifth of the tolerance's edge; a small change in the model "
                "may turn them into misses, for the reason given:", ""]
        for o in close:
            why = by_key[o.key].miss_mechanism or "not yet analysed"
            out.append(f"* **{o.key}** (model {o.model_ratio:.3f} vs published "
                       f"{o.published_ratio:.3f}, {o.deviation:+.1%}): {why}.")
    out += ["", "## Caveats", "",
            "* `host.stack_pkt_us` comes from a per-layer measurement of Linux's UDP path "
            "(S210), TCP's own common path being taken as no dearer (S180); `nic.peer_stack_us` "
            "is derived from it and the host's other costs. Neither is set from an end-to-end "
            "result, so the F14 TCP_RR ratios rest on a native baseline from below.",
            "* B03-specweb-vmware's published figure is a bound ('less than a third of "
            "native's clients'); it is judged as the ratio 1/3.",
            "* The application workloads (kv, web, oltp) have no published comparison here yet "
            "other than the SPECweb99 statements; their per-request CPU figures are "
            "assumptions (docs/sources.md).",
            "", "## Sources", ""]
    for citation in dict.fromkeys(c.citation for c in COMPARISONS):
        out.append(f"* {citation}")
    return "\n".join(out) + "\n"
