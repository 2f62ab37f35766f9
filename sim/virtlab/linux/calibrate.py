"""``virtlab calibrate``: measure what the simulator's container path assumes, on this machine.

Four experiments, each *interleaved*: the host and the container variant alternate round by
round (and swap which goes first), so slow drift (frequency scaling, a noisy neighbour VM, page
cache) hits both equally. Every figure is a median with its interquartile range.

1. **Namespace creation**: one ``unshare()`` per kind, timed in a fresh child after warm-up.
2. **Container start-up**: fork → launcher → unshare → PID 1 → hostname, private mounts, /proc,
   ``lo`` up → "ready", against the same double fork without namespaces.
3. **Steady state**: a null syscall and TCP over ``lo`` (bulk MiB/s and 1-byte round trip), in a
   plain child and as PID 1 of a container.
4. **veth hop** (root only): TCP from the host to a server in the container over a veth pair,
   against the same client and server over the host's ``lo``.

Derived for the profile (see :mod:`virtlab.linux.profile` for the file):

* ``host.syscall_us`` = median host cost of ``os.getpid()`` minus the same loop without a syscall;
* ``container.syscall_extra_us`` = median over rounds of (container − host), clamped at 0;
* ``container.veth_hop_us`` = half the median over rounds of (veth RTT − lo RTT), clamped at 0,
  where each round's RTT is the *median* of its 1-byte pings. A ping-pong crosses the veth pair
  once each way and is serial (each packet's ``veth_xmit`` → ``netif_rx`` → softirq runs on the
  critical path), so half the extra round trip is the extra cost one small packet pays. Per-ping
  medians matter: on a VM a few pings per thousand stall for milliseconds, so *mean* RTTs
  differ between rounds by far more than the sub-µs effect. The bulk figure is recorded too,
  as ``veth_extra_us_per_64KiB``, but it mixes in per-byte and MTU effects (1500 on veth,
  65536 on ``lo``), so it is a per-64-KiB cost, not a per-packet one.
"""

from __future__ import annotations

import functools
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from virtlab.linux import cleanup, namespaces, netdev, netlink, probes, procs
from virtlab.linux import libc as _c
from virtlab.linux.container import CONTAINER_FLAGS, Container, ContainerSpec, Inside
from virtlab.linux.text import Teller, table

__all__ = ["Calibration", "Plan", "Spread", "run_calibration"]


@dataclass(frozen=True)
class Plan:
    """How much to measure. The defaults take 10-20 s; :meth:`quick` about 3-5 s."""

    ns_samples: int = 20
    startup_samples: int = 20
    rounds: int = 11
    syscall_calls: int = 200_000
    bulk_bytes: int = 128 << 20
    rtt_count: int = 4000
    veth: bool = True

    @classmethod
    def quick(cls, veth: bool = True) -> Plan:
        """Fewer samples: for a first look and for tests."""
        return cls(ns_samples=7, startup_samples=7, rounds=3, syscall_calls=100_000,
                   bulk_bytes=32 << 20, rtt_count=1000, veth=veth)


@dataclass(frozen=True)
class Spread:
    """A median with its spread."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Spread:
        """Summarise samples (at least one)."""
        ordered = sorted(samples)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(statistics.median(ordered), q1, q3, ordered[0], ordered[-1], len(ordered))

    def text(self) -> str:
        """``median (IQR q1–q3, n=…)`` with as many decimals as the size of the numbers needs."""
        return f"{_fmt(self.median)} (IQR {_fmt(self.q1)}–{_fmt(self.q3)}, n={self.n})"


def _fmt(value: float) -> str:
    size = abs(value)
    digits = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 1 else 3
    return f"{value:.{digits}f}"


@dataclass
class Calibration:
    """Everything measured: spreads by key (µs unless the key says otherwise), plus notes."""

    mode: str
    spreads: dict[str, Spread] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0


def _kinds(rootless: bool) -> list[tuple[str, int]]:
    base = [("none", 0)] + [(kind.name, kind.flag) for kind in namespaces.KINDS]
    base.append(("container_set", CONTAINER_FLAGS))
    if rootless:  # an ordinary user can create the others only together with a user namespace
        return [("user" if name == "none" else name, flags | _c.CLONE_NEWUSER)
                for name, flags in base if name != "user"]
    return base


_NS_KEYS = {"none": "unshare0_us", "container_set": "container_ns_create_us"}


def _measure_unshare(calib: Calibration, plan: Plan, rootless: bool) -> None:
    kinds = _kinds(rootless)
    samples: dict[str, list[float]] = {name: [] for name, _ in kinds}
    for round_no in range(plan.ns_samples):
        shift = round_no % len(kinds)
        for name, flags in kinds[shift:] + kinds[:shift]:  # rotate the order every round
            if name in calib.skipped:
                continue
            try:
                samples[name].append(procs.run_forked(
                    functools.partial(probes.unshare_cost_us, flags), timeout_s=5.0,
                    name="virtlab-probe"))
            except OSError as exc:
                calib.skipped[name] = f"unshare({_c.flag_names(flags)}) failed: {exc.strerror}"
    for name, values in samples.items():
        if values:
            calib.spreads[_NS_KEYS.get(name, f"{name}ns_create_us")] = Spread.of(values)


def _measure_startup(calib: Calibration, plan: Plan, rootless: bool) -> None:
    variants = {"plain": ContainerSpec(flags=0),
                "container": ContainerSpec(rootless=rootless)}
    ready: dict[str, list[float]] = {name: [] for name in variants}
    reaped: dict[str, list[float]] = {name: [] for name in variants}
    for round_no in range(plan.startup_samples):
        order = list(variants) if round_no % 2 == 0 else list(reversed(variants))
        for name in order:
            start = time.perf_counter_ns()
            with Container(variants[name], lambda inside: 0) as ctr:
                ctr.wait_for("ready")
                ready[name].append((time.perf_counter_ns() - start) / 1e3)
                ctr.wait_for("exit")
            reaped[name].append((time.perf_counter_ns() - start) / 1e3)
    calib.spreads["startup_us"] = Spread.of(ready["container"])
    calib.spreads["startup_plain_us"] = Spread.of(ready["plain"])
    calib.spreads["startup_reaped_us"] = Spread.of(reaped["container"])
    calib.spreads["startup_plain_reaped_us"] = Spread.of(reaped["plain"])
    calib.spreads["startup_extra_us"] = Spread.of(
        [c - p for c, p in zip(ready["container"], ready["plain"], strict=True)])


def _steady(plan: Plan) -> Callable[[Inside], dict[str, float]]:
    def payload(inside: Inside) -> dict[str, float]:
        result = probes.syscall_cost_ns(plan.syscall_calls)
        server = probes.Server("127.0.0.1")
        try:
            result["bulk_mib_s"] = probes.bulk_mib_s(server.address, server.token,
                                                     plan.bulk_bytes)
            rtt = probes.rtt_us(server.address, server.token, plan.rtt_count)
            result["rtt_us"], result["rtt_mean_us"] = rtt["median"], rtt["mean"]
        finally:
            server.stop()
        return result

    return payload


def _measure_steady(calib: Calibration, plan: Plan, rootless: bool) -> None:
    variants = {"host": ContainerSpec(flags=0), "netns": ContainerSpec(rootless=rootless)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for round_no in range(plan.rounds):
        order = list(variants) if round_no % 2 == 0 else list(reversed(variants))
        for name in order:
            with Container(variants[name], _steady(plan), timeout_s=60.0) as ctr:
                runs[name].append(ctr.result())
    host, ctr_runs = runs["host"], runs["netns"]
    calib.spreads["syscall_host_us"] = Spread.of([r["syscall_ns"] / 1e3 for r in host])
    calib.spreads["syscall_container_us"] = Spread.of([r["syscall_ns"] / 1e3 for r in ctr_runs])
    calib.spreads["syscall_extra_us"] = Spread.of(
        [(c["syscall_ns"] - h["syscall_ns"]) / 1e3 for c, h in zip(ctr_runs, host, strict=True)])
    calib.spreads["python_getpid_call_us"] = Spread.of([r["getpid_ns"] / 1e3 for r in host])
    for label, runs_of in (("host", host), ("netns", ctr_runs)):
        calib.spreads[f"loopback_rtt_{label}_us"] = Spread.of([r["rtt_us"] for r in runs_of])
        calib.spreads[f"loopback_rtt_mean_{label}_us"] = Spread.of(
            [r["rtt_mean_us"] for r in runs_of])
        calib.spreads[f"loopback_bulk_{label}_mib_s"] = Spread.of(
            [r["bulk_mib_s"] for r in runs_of])


def _free_subnet() -> int:
    """Pick a third octet N such that 10.231.N.0/24 overlaps no IPv4 route of this host."""
    routes = []
    with open("/proc/net/route", encoding="ascii") as handle:
        for line in handle.readlines()[1:]:
            fields = line.split()
            # The kernel prints the raw 32-bit words, i.e. in this machine's byte order.
            dest, mask = int(fields[1], 16), int(fields[7], 16)
            if mask:  # the default route overlaps everything and is harmless: more specific wins
                routes.append((dest, mask))
    for offset in range(250):
        octet = (os.getpid() + offset) % 250 + 1
        net = int.from_bytes(socket.inet_aton(f"10.231.{octet}.0"), sys.byteorder)
        mask24 = int.from_bytes(socket.inet_aton("255.255.255.0"), sys.byteorder)
        if all((net & mask & mask24) != (dest & mask & mask24) for dest, mask in routes):
            return octet
    raise RuntimeError("no free 10.231.N.0/24 subnet for the veth pair")


def _veth_payload(ctr_if: str, host_if: str, ctr_addr: str) -> Callable[[Inside], str]:
    def payload(inside: Inside) -> str:
        # Created from inside, peer pushed out: if the container dies, both ends go with it.
        netlink.create_veth(ctr_if, host_if, peer_netns_fd=inside.host_netns_fd)
        netdev.set_ipv4(ctr_if, ctr_addr, 24)
        netdev.set_link_up(ctr_if)
        server = probes.Server(ctr_addr)
        try:
            inside.send("veth", port=server.address[1], token=server.token.hex())
            inside.recv(timeout_s=120.0)
        finally:
            server.stop()
        netlink.delete_link(ctr_if)
        return "done"

    return payload


def _wait_gone(ifname: str, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            return True
        time.sleep(0.01)
    return False


def _measure_veth(calib: Calibration, plan: Plan) -> None:
    octet = _free_subnet()
    tag = os.getpid() % 100000
    host_if, ctr_if = f"vl{tag}h", f"vl{tag}c"
    host_addr, ctr_addr = f"10.231.{octet}.1", f"10.231.{octet}.2"
    lo_server = probes.Server("127.0.0.1")
    samples: dict[str, list[float]] = {key: [] for key in (
        "lo_rtt", "veth_rtt", "lo_rtt_mean", "veth_rtt_mean", "lo_bulk", "veth_bulk")}
    try:
        spec = ContainerSpec(hostname="calib", keep_host_netns=True)
        with Container(spec, _veth_payload(ctr_if, host_if, ctr_addr), timeout_s=30.0) as ctr:
            cleanup.register_link(host_if)  # it must vanish with the container
            ready = ctr.wait_for("veth")
            netdev.set_ipv4(host_if, host_addr, 24)
            netdev.set_link_up(host_if)
            targets = {"lo": (lo_server.address, lo_server.token),
                       "veth": ((ctr_addr, ready["port"]), bytes.fromhex(ready["token"]))}
            for round_no in range(plan.rounds):
                order = ["lo", "veth"] if round_no % 2 == 0 else ["veth", "lo"]
                for path in order:
                    samples[f"{path}_bulk"].append(probes.bulk_mib_s(*targets[path],
                                                                     plan.bulk_bytes))
                    rtt = probes.rtt_us(*targets[path], plan.rtt_count)
                    samples[f"{path}_rtt"].append(rtt["median"])
                    samples[f"{path}_rtt_mean"].append(rtt["mean"])
            ctr.send(done=True)
            ctr.result(timeout_s=10.0)
    finally:
        lo_server.stop()
        if not _wait_gone(host_if):
            calib.skipped["veth_cleanup"] = f"{host_if} still present after 10 s"
    names = {"veth_rtt": "veth_rtt_us", "lo_rtt": "veth_lo_rtt_us",
             "veth_rtt_mean": "veth_rtt_mean_us", "lo_rtt_mean": "veth_lo_rtt_mean_us",
             "veth_bulk": "veth_bulk_mib_s", "lo_bulk": "veth_lo_bulk_mib_s"}
    for key, values in samples.items():
        calib.spreads[names[key]] = Spread.of(values)
    calib.spreads["veth_rtt_extra_us"] = Spread.of(
        [v - lo for v, lo in zip(samples["veth_rtt"], samples["lo_rtt"], strict=True)])
    seg_us = [62_500.0 * (1 / v - 1 / lo)  # 64 KiB / (MiB/s) = 1e6 * 65536 / 2**20 µs
              for v, lo in zip(samples["veth_bulk"], samples["lo_bulk"], strict=True)]
    calib.spreads["veth_extra_us_per_64KiB"] = Spread.of(seg_us)


_ROWS: tuple[tuple[str, str], ...] = (
    ("unshare0_us", "unshare(0): the call itself, no namespace, µs"),
    ("container_ns_create_us", "UTS+PID+mount+net+IPC in one unshare(), µs"),
    ("startup_us", "fork → PID 1 ready, with namespaces, µs"),
    ("startup_plain_us", "the same double fork without namespaces, µs"),
    ("startup_extra_us", "what the namespaces and setup add, µs"),
    ("syscall_host_us", "null syscall (getpid) on the host, µs"),
    ("syscall_container_us", "the same inside the container, µs"),
    ("syscall_extra_us", "container − host, per round, µs"),
    ("loopback_rtt_mean", "the same, mean of the pings (stalls included), µs"),
    ("loopback_rtt_", "TCP 1-byte round trip over lo (median ping), µs"),
    ("loopback_bulk_", "TCP bulk over lo, MiB/s"),
    ("veth_rtt_us", "host → container over veth, median ping, µs"),
    ("veth_lo_rtt_us", "host → host over lo, same client, median ping, µs"),
    ("veth_rtt_mean_us", "host → container over veth, mean ping, µs"),
    ("veth_lo_rtt_mean_us", "host → host over lo, mean ping, µs"),
    ("veth_bulk_mib_s", "host → container over veth, TCP bulk, MiB/s"),
    ("veth_lo_bulk_mib_s", "host → host over lo, TCP bulk, MiB/s"),
    ("veth_rtt_extra_us", "veth − lo round trip, paired per round, µs"),
    ("veth_extra_us_per_64KiB", "64 KiB at the veth rate − at the lo rate, µs"),
    ("startup_reaped_us", "fork → both processes exited and reaped, µs"),
    ("startup_plain_reaped_us", "the same without namespaces, µs"),
    ("python_getpid_call_us", "a whole os.getpid() call from Python, µs"),
)


def _describe(key: str) -> str:
    exact = dict(_ROWS)
    if key in exact:
        return exact[key]
    if key.endswith("ns_create_us"):
        return "one unshare() of that kind, µs"
    return next((text for prefix, text in _ROWS if key.startswith(prefix)), "")


def run_calibration(plan: Plan, mode: str = "root",
                    out: Callable[[str], None] = print) -> Calibration:
    """Run the experiments, printing what each does first; return the measurements."""
    tell = Teller(out)
    rootless = mode == "rootless"
    calib = Calibration(mode)
    start = time.monotonic()
    tell.title("virtlab calibrate: what does a container cost on this machine?",
               f"Mode: {mode}. Each figure is a median over interleaved rounds, with its "
               "interquartile range (IQR), because single timings on a shared machine vary.")
    with procs.signals_as_interrupts():
        tell.step(f"Namespace creation: {plan.ns_samples} timed unshare() calls per kind.",
                  "Each sample forks a fresh child, warms it up with unshare(0), then times one "
                  "unshare(kind)." + (" Rootless: every kind includes CLONE_NEWUSER."
                                      if rootless else ""))
        _measure_unshare(calib, plan, rootless)
        tell.step(f"Container start-up: {plan.startup_samples} rounds, with and without "
                  "namespaces.", "From fork() to PID 1 reporting 'ready' after its setup.")
        _measure_startup(calib, plan, rootless)
        tell.step(f"Steady state: {plan.rounds} rounds of syscalls and TCP over lo, host vs "
                  "container.", "Inside a namespace a syscall still enters the same kernel, so "
                  "we expect no difference; we measure rather than assume.")
        _measure_steady(calib, plan, rootless)
        if plan.veth and not rootless:
            tell.step(f"veth hop: {plan.rounds} rounds, host → container over a veth pair vs "
                      "host → host over lo.",
                      "The veth pair is created inside the container and its peer pushed to "
                      "the host, so it vanishes with the container whatever happens.")
            _measure_veth(calib, plan)
        else:
            calib.skipped["veth"] = ("not measured: moving a veth end into the host's network "
                                     "namespace needs root" if rootless else
                                     "not measured: --no-veth")
    calib.elapsed_s = time.monotonic() - start
    tell.step("Results.")
    tell.block(table(("measurement", "median (IQR, n)", "meaning"),
                     [(key, spread.text(), _describe(key))
                      for key, spread in calib.spreads.items()]))
    for name, why in calib.skipped.items():
        tell.show(f"skipped {name}", why)
    tell.show("time taken", f"{calib.elapsed_s:.1f} s")
    return calib


def profile_values(calib: Calibration) -> dict[str, Any]:
    """Derive the numbers the simulator uses, as the module docstring explains."""
    spreads = calib.spreads
    values: dict[str, Any] = {"syscall_us": spreads["syscall_host_us"].median,
                              "syscall_extra_us_raw": spreads["syscall_extra_us"].median}
    values["syscall_extra_us"] = max(0.0, values["syscall_extra_us_raw"])
    if "veth_rtt_extra_us" in spreads:
        values["veth_hop_us_raw"] = spreads["veth_rtt_extra_us"].median / 2
        values["veth_hop_us"] = max(0.0, values["veth_hop_us_raw"])
    return values
