"""Exact, zero-variance behaviour of blkfront/blkback's extensions (Xen 3.x).

Persistent grants (``xen_persistent_grants``, with ``xen_blk_max_persistent_grants``), indirect
requests (``xen_blk_max_indirect_segments``) and the ring size, for a 4 KiB and a 1 MiB request
with and without each. Every expected value is computed here from the parameters, step by step
as Linux's blkfront and blkback take them (S140, S141), without running the model's code.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from tests.helpers import copy_us
from tests.helpers import pv_scenario as scenario
from virtlab import BlockIO, run
from virtlab.hardware import DiskParams, HostParams, HypervisorParams
from virtlab.paths.paravirtual import ParavirtualParams
from virtlab.records import PHASES

HOST = HostParams()
HV = HypervisorParams()
HYPERCALL_US = HV.hypercall_cycles / (HOST.cpu_ghz * 1000.0)
INJECT_US = HV.irq_inject_cycles / (HOST.cpu_ghz * 1000.0)
DISK = DiskParams(service_cv=0.0)
KIB = 1024
MIB = 1024 * 1024


def xen(**fields) -> ParavirtualParams:
    return ParavirtualParams(backend="xen", **fields)


@dataclasses.dataclass
class BlkCost:
    """One block I/O that fits one ring request, priced step by step.

    ``mapped_*`` are the grants blkback maps for it, ``unmapped_*`` those it unmaps (indirect
    pages right after reading them, segments after the I/O).
    """

    pv: ParavirtualParams
    nbytes: int
    write: bool
    mapped_indirect: int
    unmapped_indirect: int
    mapped_segments: int
    unmapped_segments: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.nbytes / 4096))

    @property
    def indirect_pages(self) -> int:
        return math.ceil(self.pages / 512) if self.pages > self.pv.xen_blk_max_segments else 0

    def map_us(self, ops: int) -> float:
        return HYPERCALL_US + ops * self.pv.grant_op_us if ops else 0.0

    def unmap_us(self, ops: int) -> float:
        pv = self.pv
        return (HYPERCALL_US + ops * pv.grant_op_us + pv.tlb_flush_us * pv.driver_domain_vcpus
                if ops else 0.0)

    def latency_us(self) -> float:
        pv = self.pv
        persistent = pv.xen_persistent_grants
        grants = self.pages + self.indirect_pages
        access = DISK.write_access_us if self.write else DISK.read_access_us
        return (HOST.syscall_us + 0.5 * HOST.blk_io_us                # submit + block layer
                + pv.ring_op_us * (1 + grants)                        # grant pages, 1 request
                + (copy_us(self.nbytes) if persistent and self.write else 0.0)
                + HYPERCALL_US                                        # EVTCHNOP_send
                + HV.xen_domain_switch_us + INJECT_US + HOST.ctx_switch_us   # dom0, kthread
                + pv.backend_pkt_us                                   # blkback: request
                + self.map_us(self.mapped_indirect)                   # parse_indirect: map,
                + self.unmap_us(self.unmapped_indirect)               # read, unmap
                + self.map_us(self.mapped_segments)                   # xen_blkbk_map_seg
                + 0.5 * HOST.blk_io_us                                # submit bio
                + access + self.nbytes / DISK.interface_mbytes_per_s  # the disk
                + HV.xen_domain_switch_us + INJECT_US                 # disk irq reaches dom0
                + 0.5 * HOST.blk_io_us + pv.backend_pkt_us            # completion, response
                + self.unmap_us(self.unmapped_segments)               # transient segments
                + HYPERCALL_US                                        # EVTCHNOP_send
                + INJECT_US + HV.xen_domain_switch_us + HOST.irq_us   # upcall to idle guest
                + 0.5 * HOST.blk_io_us + pv.ring_op_us * grants       # blkif_completion
                + (copy_us(self.nbytes) if persistent and not self.write else 0.0)
                + HOST.ctx_switch_us)                                 # fio wakes

    def cpu_us(self) -> tuple[float, float, float, float]:
        """(guest, exit, backend, host kernel) CPU of the I/O."""
        pv = self.pv
        persistent = pv.xen_persistent_grants
        grants = self.pages + self.indirect_pages
        hypercalls = (2 + bool(self.mapped_indirect) + bool(self.unmapped_indirect)
                      + bool(self.mapped_segments) + bool(self.unmapped_segments))
        guest = (HOST.syscall_us + 0.5 * HOST.blk_io_us + pv.ring_op_us * (1 + grants)
                 + (copy_us(self.nbytes) if persistent else 0.0)
                 + HOST.irq_us + 0.5 * HOST.blk_io_us + pv.ring_op_us * grants
                 + HOST.ctx_switch_us)
        exits = (hypercalls * HYPERCALL_US + 3 * (HV.xen_domain_switch_us + INJECT_US))
        ops = (self.mapped_indirect + self.unmapped_indirect + self.mapped_segments
               + self.unmapped_segments)
        flushes = bool(self.unmapped_indirect) + bool(self.unmapped_segments)
        backend = (HOST.ctx_switch_us + 2 * pv.backend_pkt_us + ops * pv.grant_op_us
                   + flushes * pv.tlb_flush_us * pv.driver_domain_vcpus)
        return guest, exits, backend, HOST.blk_io_us


def one_io(pv: ParavirtualParams, nbytes: int, write: bool, requests: int = 1):
    workload = BlockIO(iodepth=1, block_bytes=nbytes, read_fraction=0.0 if write else 1.0)
    return run(scenario(workload, pv, disk=DISK), 0, max_requests=requests, records=True)


def check_record(record, cost: BlkCost) -> None:
    assert record.latency_us == pytest.approx(cost.latency_us(), abs=1e-9)
    assert sum(getattr(record, f"lat_{p}_us") for p in PHASES) == pytest.approx(
        record.latency_us, abs=1e-9)
    got = (record.cpu_guest_us, record.cpu_exit_us, record.cpu_backend_us,
           record.cpu_host_kernel_us)
    assert got == pytest.approx(cost.cpu_us(), abs=1e-9)
    assert (record.notifications, record.interrupts) == (1, 1)


# One 4 KiB request: a direct request whatever the indirect setting --------------------------

@pytest.mark.parametrize("write", [False, True])
@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("indirect", [0, 32])
def test_4k_request_costs_the_sum_of_its_steps(write, persistent, indirect):
    """Without persistent grants the page is mapped and unmapped (hypercalls + a TLB flush);
    with them it is mapped once and kept, and blkfront copies 4 KiB. One page is never an
    indirect request."""
    pv = xen(xen_persistent_grants=persistent, xen_blk_max_indirect_segments=indirect)
    result = one_io(pv, 4 * KIB, write)
    (record,) = result.records
    check_record(record, BlkCost(pv, 4 * KIB, write, 0, 0, 1, 0 if persistent else 1))
    counters = result.path_stats["g"]["counters"]
    assert counters["g.xen-blk.indirect_requests"] == 0
    assert counters["g.xen-blk.persistent_grants_kept"] == (1 if persistent else 0)


@pytest.mark.parametrize("write", [False, True])
def test_persistent_grants_after_warm_up_make_no_grant_hypercall(write):
    """The second 4 KiB I/O reuses blkfront's pooled grant, which blkback still maps: no map,
    no unmap, no TLB flush; only the copy remains."""
    pv = xen(xen_persistent_grants=True)
    result = one_io(pv, 4 * KIB, write, requests=2)
    first, second = result.records
    check_record(first, BlkCost(pv, 4 * KIB, write, 0, 0, 1, 0))
    check_record(second, BlkCost(pv, 4 * KIB, write, 0, 0, 0, 0))
    counters = result.path_stats["g"]["counters"]
    assert (counters["g.xen-blk.grant_maps"], counters["g.xen-blk.grant_unmaps"]) == (1, 0)
    assert counters["g.xen-blk.persistent_grant_hits"] == 1
    assert counters["g.xen-blk.frontend_grants_reused"] == 1


# One 1 MiB request: 256 pages ----------------------------------------------------------------

@pytest.mark.parametrize("write", [False, True])
@pytest.mark.parametrize("persistent", [False, True])
def test_1m_indirect_request_costs_the_sum_of_its_steps(write, persistent):
    """With 256 indirect segments a 1 MiB I/O is one ring request and one indirect page:
    blkback maps the indirect page, reads it and (unless kept) unmaps it, then maps the 256
    segments in one hypercall."""
    pv = xen(xen_persistent_grants=persistent, xen_blk_max_indirect_segments=256)
    result = one_io(pv, MIB, write)
    (record,) = result.records
    transient = 0 if persistent else 1
    check_record(record, BlkCost(pv, MIB, write, 1, transient, 256, 256 * transient))
    counters = result.path_stats["g"]["counters"]
    assert counters["g.xen-blk.indirect_requests"] == 1
    assert counters["g.xen-blk.grant_maps"] == 257
    assert counters["g.xen-blk.grant_unmaps"] == 257 * transient
    assert result.path_stats["g"]["rings"]["g.xen-blk.ring"]["max_occupancy"] == 1


@pytest.mark.parametrize("indirect, requests", [(0, math.ceil(256 / 11)), (32, 256 // 32),
                                                (256, 1)])
@pytest.mark.parametrize("persistent", [False, True])
def test_1m_request_takes_the_ring_slots_the_segment_limit_allows(indirect, requests,
                                                                  persistent):
    """Without indirect requests 1 MiB is ceil(256 / 11) = 24 ring requests of at most 11
    segments; with 32 indirect segments (Linux blkfront's default) 8; with 256 one. Each I/O
    is pushed with one event-channel send, and every page is mapped once."""
    pv = xen(xen_persistent_grants=persistent, xen_blk_max_indirect_segments=indirect)
    result = one_io(pv, MIB, write=False)
    (record,) = result.records
    assert record.notifications == 1
    counters = result.path_stats["g"]["counters"]
    indirect_requests = requests if indirect else 0
    assert counters["g.xen-blk.indirect_requests"] == indirect_requests
    assert counters["g.xen-blk.grant_maps"] == 256 + indirect_requests
    assert counters["g.xen-blk.grant_unmaps"] == (0 if persistent else 256 + indirect_requests)
    assert result.path_stats["g"]["rings"]["g.xen-blk.ring"]["max_occupancy"] == requests


def test_fewer_ring_requests_cost_less_backend_time():
    """Per ring request blkback pays its request and response work, a map and an unmap
    hypercall and a TLB flush: one indirect request (plus its indirect page) costs less
    driver-domain time than 24 direct ones for the same 256 pages. (The latency is another
    matter: the disk serves each ring request as one command, and 24 run on its channels in
    parallel.)"""
    pv_direct = xen(xen_persistent_grants=False, xen_blk_max_indirect_segments=0)
    pv_indirect = xen(xen_persistent_grants=False, xen_blk_max_indirect_segments=256)
    direct = one_io(pv_direct, MIB, write=False).records[0]
    indirect = one_io(pv_indirect, MIB, write=False).records[0]
    # 23 more requests and responses, 24 unmap flushes against 2 (the indirect page's and the
    # segments'), 2 grant operations fewer (no indirect page), and at least as many kthread
    # wake-ups (each is a context switch) as the one of the indirect case.
    pv = pv_direct
    fewer = (23 * 2 * pv.backend_pkt_us + 22 * pv.tlb_flush_us * pv.driver_domain_vcpus
             - 2 * pv.grant_op_us)
    assert direct.cpu_backend_us - indirect.cpu_backend_us >= fewer - 1e-9


@pytest.mark.parametrize("limit", [0, 100, 257])
def test_persistent_grant_limit_bounds_what_blkback_keeps(limit):
    """blkback keeps at most max_persistent_grants mapped; the rest are mapped and unmapped
    per request. Two 1 MiB reads (one indirect page + 256 segments each): the first keeps the
    indirect page and limit - 1 segments; blkfront puts the kept grants at the head of its
    list, so the second reuses all of them and maps (and unmaps) the 257 - limit others."""
    pv = xen(xen_persistent_grants=True, xen_blk_max_indirect_segments=256,
             xen_blk_max_persistent_grants=limit)
    result = one_io(pv, MIB, write=False, requests=2)
    first, second = result.records
    kept_indirect = min(limit, 1)
    kept_segments = max(limit - 1, 0)
    check_record(first, BlkCost(pv, MIB, False, 1, 1 - kept_indirect, 256, 256 - kept_segments))
    check_record(second, BlkCost(pv, MIB, False, 1 - kept_indirect, 1 - kept_indirect,
                                 256 - kept_segments, 256 - kept_segments))
    counters = result.path_stats["g"]["counters"]
    assert counters["g.xen-blk.persistent_grants_kept"] == limit
    assert counters["g.xen-blk.persistent_grant_hits"] == limit
    assert counters["g.xen-blk.grant_maps"] == 257 + (257 - limit)
    assert counters["g.xen-blk.grant_unmaps"] == 2 * (257 - limit)


# Multi-page rings ----------------------------------------------------------------------------

@pytest.mark.parametrize("order", [0, 1, 2])
def test_ring_page_order_sets_the_slots(order):
    """32 requests per ring page: 64 direct 4 KiB reads fill a one-page ring twice over (the
    frontend waits for space), a two-page ring once, a four-page ring never."""
    pv = xen(xen_blk_ring_page_order=order)
    disk = DiskParams(service_cv=0.0, read_access_us=0.0, interface_mbytes_per_s=1e6)
    workload = BlockIO(iodepth=64, block_bytes=4 * KIB)
    result = run(scenario(workload, pv, disk=disk), 0, max_requests=64, records=True)
    assert len(result.records) == 64
    ring = result.path_stats["g"]["rings"]["g.xen-blk.ring"]
    assert ring["size"] == 32 << order
    assert ring["max_occupancy"] <= 32 << order
    if order == 2:
        assert ring["max_occupancy"] == 64


# Era defaults --------------------------------------------------------------------------------

def test_generation_sets_unset_features():
    """Unset, the features follow the generation: on (32 indirect segments) for 3.x, off for
    1.x, which has no grant tables; set explicitly they win."""
    three = xen()
    assert (three.xen_persistent_grants, three.xen_blk_max_indirect_segments) == (True, 32)
    one = xen(xen_generation="1.x")
    assert (one.xen_persistent_grants, one.xen_blk_max_indirect_segments) == (False, 0)
    assert xen(xen_persistent_grants=False).xen_persistent_grants is False


@pytest.mark.parametrize("profile, on", [("modern", True), ("testbed-2014", True),
                                         ("era-2007", False), ("testbed-2003", False)])
def test_profiles_have_their_eras_features(profile, on):
    """Linux >= 3.11 profiles have persistent grants and indirect requests; 2007 and 2003 do
    not, also when the 2003 testbed is switched to Xen 3.x."""
    from virtlab.config import scenario_from_dict

    for extra in ({}, {"paravirtual": {"backend": "xen", "xen_generation": "3.x"}}):
        pv = scenario_from_dict(extra, profile).paravirtual
        assert pv.xen_persistent_grants is on
        assert pv.xen_blk_max_indirect_segments == (32 if on else 0)
        assert pv.xen_blk_ring_page_order == 0   # blkfront's max_ring_page_order default
