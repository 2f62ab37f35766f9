"""Small builders shared by the tests (not fixtures: plain functions are easier to read)."""

from __future__ import annotations

import dataclasses
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
