#!/usr/bin/env python3
"""Lab 04 (rings): a virtqueue exercise, and a check of the lab's claims against the simulator.

    python labs/04-rings/check.py -s 3                # a generated exercise (seed 3)
    python labs/04-rings/check.py -s 3 -c             # ... with its answers, step by step
    python labs/04-rings/check.py -s 3 --check "kicks=1,interrupts=1,avail_idx=1,used_idx=1,free=11"
    python labs/04-rings/check.py --claims            # re-run the README's experiments

``--claims`` runs each experiment of the README, prints what it measured and PASS or FAIL,
and exits with status 0 only if every claim holds. Nothing here is model code: the exercise
lives in ``virtlab.labs.rings`` and the experiments call ``virtlab.run``.
"""

from __future__ import annotations

import dataclasses
import sys

from virtlab import BlockIO, GuestSpec, RequestResponse, Scenario, run
from virtlab.hardware import DiskParams, HostParams
from virtlab.labs import rings as ringlab
from virtlab.paths.paravirtual import ParavirtualParams

SEED = 0
DURATION_US = 20_000.0
DEPTHS = (1, 4, 16, 32)
BURST = 16


def one_guest(workload, pv, **tables):
    return Scenario(duration_us=DURATION_US, warmup_us=2_000.0, paravirtual=pv, guests=(
        GuestSpec(name="g", approach="paravirtual", vcpus=2, workloads=(workload,)),),
        **tables)


def claim_kicks_fall_with_load():
    kicks = [run(one_guest(BlockIO(iodepth=d), ParavirtualParams()), SEED, records=True)
             .summaries[0].notifications_per_request for d in DEPTHS]
    shown = ", ".join(f"depth {d}: {k:.2f}" for d, k in zip(DEPTHS, kicks, strict=True))
    ok = all(a > b for a, b in zip(kicks, kicks[1:], strict=False)) and kicks[-1] < 0.5
    return ok, f"kicks per I/O fall as iodepth rises ({shown})"


def claim_event_index_kicks_once_per_burst():
    counts = {}
    for event_idx in (True, False):
        pv = ParavirtualParams(event_idx=event_idx, backend_pkt_us=20.0)
        scenario = dataclasses.replace(one_guest(BlockIO(iodepth=BURST), pv),
                                       host=HostParams(ctx_switch_us=10.0),
                                       disk=DiskParams(service_cv=0.0), duration_us=1e6)
        result = run(scenario, SEED, max_requests=BURST, records=True)
        counts[event_idx] = sum(r.notifications for r in result.records)
    ok = counts[True] == 1 and counts[False] > 1
    return ok, (f"a burst of {BURST} to a busy backend: {counts[True]} kick with event index, "
                f"{counts[False]} with flag hints (the backend's slow wake-up is a window)")


def claim_full_ring_back_pressure():
    pv = ParavirtualParams(ring_size=8, tx_stop_free=4)
    scenario = dataclasses.replace(one_guest(BlockIO(iodepth=64), pv), duration_us=1e7)
    result = run(scenario, SEED, max_requests=1000, records=True)
    waits = result.path_stats["g"]["counters"]["g.virtio-blk.ring_full_waits"]
    ring = result.path_stats["g"]["rings"]["g.virtio-blk.vq"]
    ok = len(result.records) == 1000 and not result.in_flight and waits > 0 and \
        ring["max_occupancy"] <= 8
    return ok, (f"64 I/Os on an 8-entry queue: {len(result.records)} of 1000 completed, "
                f"{waits} waits for a free descriptor, backlog never above "
                f"{ring['max_occupancy']}")


def claim_qemu_wakes_slower_than_vhost():
    latency = {b: run(one_guest(RequestResponse(), ParavirtualParams(backend=b)), SEED,
                      records=True).summaries[0].latency_mean_us
               for b in ("vhost", "qemu")}
    extra = latency["qemu"] - latency["vhost"]
    ok = 30.0 < extra < 50.0   # two wake-ups of ~20 µs each (S29) replace two of vhost's
    return ok, (f"TCP_RR: vhost {latency['vhost']:.1f} µs, QEMU {latency['qemu']:.1f} µs "
                f"(+{extra:.1f}: one slow wake-up per direction)")


def claim_persistent_grants_map_once():
    maps = {}
    for persistent in (False, True):
        pv = ParavirtualParams(backend="xen", xen_persistent_grants=persistent)
        result = run(one_guest(BlockIO(iodepth=8), pv), SEED, records=True)
        done = len(result.records)
        maps[persistent] = result.path_stats["g"]["counters"]["g.xen-blk.grant_maps"] / done
    ok = maps[False] >= 0.99 and maps[True] < 0.05
    return ok, (f"Xen block: {maps[False]:.2f} grant maps per I/O, {maps[True]:.3f} with "
                "persistent grants")


CLAIMS = (claim_kicks_fall_with_load, claim_event_index_kicks_once_per_burst,
          claim_full_ring_back_pressure, claim_qemu_wakes_slower_than_vhost,
          claim_persistent_grants_map_once)


def check_claims() -> int:
    failed = 0
    for claim in CLAIMS:
        ok, what = claim()
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--claims"]:
        sys.exit(check_claims())
    sys.exit(ringlab.main(sys.argv[1:]))
