"""Small builders shared by the tests (not fixtures: plain functions are easier to read)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from virtlab import BlockIO, GuestSpec, RequestResponse, Scenario
from virtlab.hardware import DiskParams, HostParams, NicParams


def zero_cost_host(**overrides: Any) -> HostParams:
    """A host whose kernel work costs nothing (the model degenerates to its devices)."""
    values = dict(syscall_us=0.0, ctx_switch_us=0.0, irq_us=0.0, stack_pkt_us=0.0,
                  bridge_pkt_us=0.0, blk_io_us=0.0)
    values.update(overrides)
    return HostParams(**values)


def single_queue_disk(mean_access_us: float, cv: float, channels: int = 1) -> DiskParams:
    """A flash device reduced to ``channels`` servers with the given service distribution.

    The interface is made so fast (1e6 MB/s) that a 512-byte transfer adds 0.000512 µs, and the
    hardware queues take commands at any rate (``queue_iops = 0``).
    """
    return DiskParams(kind="flash", channels=channels, read_access_us=mean_access_us,
                      write_access_us=mean_access_us, service_cv=cv,
                      interface_mbytes_per_s=1e6, queue_iops=0.0)


def open_loop_disk_scenario(rate_per_s: float, mean_access_us: float, cv: float, *,
                            channels: int = 1, duration_us: float = 200_000.0,
                            warmup_us: float = 20_000.0) -> Scenario:
    """Poisson block reads into a single queue, with every CPU cost set to zero."""
    workload = BlockIO(loop="open", rate_per_s=rate_per_s, block_bytes=512)
    return Scenario(
        duration_us=duration_us, warmup_us=warmup_us, host=zero_cost_host(),
        disk=single_queue_disk(mean_access_us, cv, channels),
        guests=(GuestSpec(name="g", approach="native", vcpus=1, workloads=(workload,)),))


def rr_scenario(approach: str, **workload: Any) -> Scenario:
    """One guest running a request/response workload."""
    return Scenario(guests=(GuestSpec(name="g", approach=approach,
                                      workloads=(RequestResponse(**workload),)),))


def replace_nested(scenario: Scenario, section: str, **values: Any) -> Scenario:
    """``scenario`` with some fields of one parameter table replaced."""
    table = dataclasses.replace(getattr(scenario, section), **values)
    return dataclasses.replace(scenario, **{section: table})


def interface_us(nbytes: int) -> float:
    """Transfer time through the fast test interface."""
    return nbytes / 1e6


__all__ = ["zero_cost_host", "single_queue_disk", "open_loop_disk_scenario", "rr_scenario",
           "replace_nested", "interface_us", "NicParams"]


# The paravirtual path's exact tests (tests/test_exact_paravirtual.py,
# tests/test_exact_xen_generations.py) build their one-guest scenarios and wire times here.

def pv_scenario(workload: Any, pv: Any, *, vcpus: int = 1, **tables: Any) -> Scenario:
    """One paravirtual guest running ``workload`` for up to 1 s, with no warm-up.

    ``pv`` is the :class:`~virtlab.paths.paravirtual.ParavirtualParams`; ``tables`` are other
    parameter tables of the scenario (``host=``, ``disk=``, ``hypervisor=``...).
    """
    return Scenario(duration_us=1e6, warmup_us=0.0, paravirtual=pv, guests=(
        GuestSpec(name="g", approach="paravirtual", vcpus=vcpus, workloads=(workload,)),),
        **tables)


def wire_us(payload: int, nic: NicParams | None = None) -> float:
    """Serialization of ``payload`` bytes in MTU frames plus the link's latency."""
    nic = nic if nic is not None else NicParams()
    per_frame = nic.mtu_bytes - nic.tcp_ip_header_bytes
    frames = max(1, math.ceil(payload / per_frame))
    bytes_per_us = nic.line_rate_gbps * 1e9 / 8 / 1e6
    return (payload + frames * nic.frame_overhead_bytes) / bytes_per_us + nic.wire_latency_us


def copy_us(nbytes: int, host: HostParams | None = None) -> float:
    """A memcpy of ``nbytes`` at the host's copy bandwidth."""
    host = host if host is not None else HostParams()
    return nbytes / (host.memcpy_gbytes_per_s * 1000.0)


__all__ += ["pv_scenario", "wire_us", "copy_us"]
