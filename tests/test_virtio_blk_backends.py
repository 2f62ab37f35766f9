"""virtio-blk's back-ends: QEMU's I/O thread (threads, Linux AIO, io_uring), vhost-user-blk.

Exact (zero-variance) tests compute each back-end's latency here, step by step from the
parameter defaults (QEMU's block/file-posix.c, linux-aio.c, io_uring.c, util/thread-pool.c,
util/aio-posix.c; SPDK's vhost), without running the model's code; behaviour tests check that
polling trades host CPU for fewer wake-ups and lower latency at low load.
"""

from __future__ import annotations

import dataclasses

import pytest
import simpy

from tests.test_exact_paravirtual import (
    EXIT_US,
    HOST,
    HV,
    INJECT_US,
    WAKE_CASES,
    scenario,
    vcpu_wake_us,
    wake_params,
)
from virtlab import BlockIO, run
from virtlab.errors import ConfigError
from virtlab.hardware import DiskParams, HypervisorParams
from virtlab.model import build
from virtlab.paths.paravirtual import BLK_BACKENDS, ParavirtualParams
from virtlab.paths.virtio_blk_backend import POLL_START_US, REACTOR_SLICE_US
from virtlab.records import PHASES
from virtlab.rng import Streams

DISK = DiskParams(service_cv=0.0)
DEVICE_US = DISK.read_access_us + 4096 / DISK.interface_mbytes_per_s
SYSCALL = HOST.syscall_us
HALF_BLK = 0.5 * HOST.blk_io_us


def host_side_us(pv: ParavirtualParams, kind: str, *, wake_us: float) -> float:
    """From the end of the guest's kick to the interrupt: the back-end's steps, by hand.

    ``wake_us`` is what one wake-up of the back-end thread costs (0 for a polling reactor).
    """
    pop = pv.backend_pkt_us
    push = pv.backend_pkt_us
    irqfd = SYSCALL + INJECT_US                          # eventfd write, KVM injection
    if kind == "qemu-threads":
        submit = SYSCALL                                 # futex wake of a pool worker
        pool = (HOST.ctx_switch_us + SYSCALL + HALF_BLK  # worker wakes, preadv
                + HOST.ctx_switch_us + HALF_BLK          # woken by the disk, syscall returns
                + SYSCALL)                               # event notifier write (thread sleeps)
        complete = SYSCALL + push                        # eventfd read, push used
    elif kind == "qemu-aio":
        submit = SYSCALL + pv.blk_aio_per_io_us + HALF_BLK   # io_submit of a batch of one
        pool = 0.0
        complete = SYSCALL + HALF_BLK + push             # eventfd read, completion, push used
    elif kind == "qemu-io-uring":
        submit = SYSCALL + pv.blk_uring_per_io_us + HALF_BLK  # io_uring_enter, batch of one
        pool = 0.0
        complete = HALF_BLK + push                       # CQE read from the shared ring
    else:                                                # vhost-user-blk: user-space NVMe
        submit = pv.blk_spdk_per_io_us
        pool = 0.0
        complete = push
    return wake_us + pop + submit + pool + DEVICE_US + wake_us + complete + irqfd


def guest_side_us(pv: ParavirtualParams, hv: HypervisorParams, host_us: float, kick: bool
                  ) -> float:
    """The guest's submission (and kick), the host side, the interrupt and the completion."""
    return (SYSCALL + HALF_BLK + pv.ring_op_us                # submit + block layer + chain
            + (EXIT_US if kick else 0.0)                      # the kick
            + host_us
            + vcpu_wake_us(host_us, hv) + HOST.irq_us + EXIT_US   # halted vCPU, irq, EOI
            + HALF_BLK + pv.ring_op_us                        # guest completion
            + HOST.ctx_switch_us)                             # fio wakes


@pytest.mark.parametrize("kind", BLK_BACKENDS)
@pytest.mark.parametrize("case", list(WAKE_CASES))
def test_one_block_read_costs_the_sum_of_each_back_ends_steps(case, kind):
    """A 4 KiB read at queue depth 1 without polling: every back-end's own steps."""
    pv, hv = wake_params(case)
    pv = ParavirtualParams(vhost_wake_latency_us=pv.vhost_wake_latency_us, blk_backend=kind,
                           blk_iothread_poll_us=0.0)
    result = run(scenario(BlockIO(iodepth=1), pv, disk=DISK, hypervisor=hv), 0, max_requests=1,
                 records=True)
    (record,) = result.records
    host_us = host_side_us(pv, kind, wake_us=HOST.ctx_switch_us + pv.vhost_wake_latency_us)
    assert record.latency_us == pytest.approx(guest_side_us(pv, hv, host_us, True), abs=1e-9)
    assert (record.notifications, record.interrupts) == (1, 1)
    assert record.exits_other == 1                                         # the HLT
    assert sum(getattr(record, f"lat_{p}_us") for p in PHASES) == pytest.approx(
        record.latency_us, abs=1e-9)


def test_vhost_user_blk_reactor_polls_without_kicks_or_wake_ups():
    """SPDK's poll mode: only the very first request crosses the never-updated avail_event and
    kicks; the reactor never sleeps, so no request pays a wake-up, and its core is busy for
    the whole run (polling is charged as backend CPU time)."""
    pv = ParavirtualParams(blk_backend="vhost-user-blk")   # blk_iothread_poll_us > 0: poll mode
    n = 5
    result = run(scenario(BlockIO(iodepth=1), pv, disk=DISK), 0, max_requests=n, records=True)
    records = sorted(result.records, key=lambda r: r.id)
    assert len(records) == n
    host_us = host_side_us(pv, "vhost-user-blk", wake_us=0.0)
    assert records[0].latency_us == pytest.approx(guest_side_us(pv, HV, host_us, True),
                                                  abs=1e-9)
    for record in records[1:]:
        assert record.notifications == 0
        assert record.latency_us == pytest.approx(guest_side_us(pv, HV, host_us, False),
                                                  abs=1e-9)
    counters = result.path_stats["g"]["counters"]
    assert counters["g.virtio-blk.backend_wakeups"] == 0
    # From t = 0 the reactor holds a core: polling plus its work cover the run up to the last
    # completion (the charge lags by at most one polling slice).
    end_us = max(r.start_us + r.latency_us for r in records)
    assert result.cpu_busy_us["backend"] >= end_us - 1000.0 - 1e-6


@pytest.mark.parametrize("kind", ["qemu-aio", "qemu-io-uring"])
def test_a_batch_of_requests_costs_one_submission_syscall(kind):
    """blk_io_plug/unplug: the requests popped in one pass share one io_submit (or
    io_uring_enter); each request pays its own interface and block-layer work."""
    n = 16
    pv = ParavirtualParams(blk_backend=kind, blk_iothread_poll_us=0.0, backend_pkt_us=5.0)
    result = run(scenario(BlockIO(iodepth=n), pv, disk=DISK), 0, max_requests=n, records=True)
    batches = result.path_stats["g"]["rings"]["g.virtio-blk.vq"]["batch_sizes"]
    call = "io_submit" if kind == "qemu-aio" else "io_uring_enter"
    per_io = pv.blk_aio_per_io_us if kind == "qemu-aio" else pv.blk_uring_per_io_us
    # Batch sizes of the ring record pops and reaps alike; the pops are the submit passes.
    submit_passes = result.cpu_label_us[f"qemu: {call} (per batch)"] / SYSCALL
    assert submit_passes == pytest.approx(round(submit_passes), abs=1e-9)
    assert 1 <= round(submit_passes) < n          # batching happened
    assert sum(batches.values()) >= round(submit_passes)
    label = f"host: {kind[5:]} per request + block layer"
    assert result.cpu_label_us[label] == pytest.approx(n * (per_io + HALF_BLK), abs=1e-9)


@pytest.mark.parametrize("blocks, windows", [
    # A sleep longer than the window but shorter than the maximum grows the window: 4 µs
    # first, then doubled, capped at the maximum; a sleep within the window changes nothing.
    ((10.0, 10.0, 10.0, 10.0, 20.0, 32.5, 32.7), (4.0, 8.0, 16.0, 16.0, 32.0, 32.768, 32.768)),
    # Within the window: no change; longer than the maximum: back to 0 (poll-shrink 0).
    ((10.0, 3.0, 40.0, 10.0), (4.0, 4.0, 0.0, 4.0)),
])
def test_the_polling_window_adapts_as_qemus_adjust_polling_time(blocks, windows):
    """util/aio-posix.c adjust_polling_time with poll-max-ns 32768, poll-grow 0 (x2) and
    poll-shrink 0, applied to a sequence of sleep lengths (expected values written out)."""
    result_windows = []
    device = _blk_device(ParavirtualParams())
    for block_us in blocks:
        device._adjust_poll(block_us)
        result_windows.append(device.poll_window_us)
    assert tuple(result_windows) == pytest.approx(windows, abs=1e-12)


def _blk_device(pv: ParavirtualParams):
    """The virtio-blk device of a paravirtual path built on a fresh model (not started)."""
    model = build(simpy.Environment(), scenario(BlockIO(iodepth=1), pv, disk=DISK), Streams(0))
    return model.guests[0].path.blk


def test_polling_lowers_latency_at_low_load_and_costs_host_cpu():
    """A fast device at queue depth 1: the I/O thread's polling window catches the next
    request and the completion, so requests skip the kick exit and the thread's wake-ups:
    lower latency, more host CPU (the polling itself)."""
    fast = DiskParams(service_cv=0.0, read_access_us=10.0)
    out = {}
    for poll_us in (0.0, 32.768):
        pv = ParavirtualParams(blk_backend="qemu-io-uring", blk_iothread_poll_us=poll_us)
        result = run(scenario(BlockIO(iodepth=1), pv, disk=fast), 0, max_requests=400,
                     records=True)
        records = result.records
        out[poll_us] = (sum(r.latency_us for r in records) / len(records),
                        sum(r.notifications for r in records) / len(records),
                        result.cpu_busy_us["backend"] / len(records),
                        result.path_stats["g"]["counters"]["g.virtio-blk.backend_wakeups"],
                        result.summaries[0].cpu_backend_us)
    (lat0, kicks0, cpu0, wakes0, req_cpu0), (lat1, kicks1, cpu1, wakes1, req_cpu1) = (
        out[0.0], out[32.768])
    assert kicks0 == pytest.approx(1.0)                # every request kicks a sleeping thread
    assert kicks1 < 0.1 * kicks0                       # the polling thread needs no kicks
    assert wakes1 < 0.1 * wakes0
    assert lat1 < lat0 - HOST.ctx_switch_us            # at least one wake-up saved
    assert cpu1 > cpu0 + POLL_START_US                 # backend CPU per request: the polling
    # ... owed by the requests it waited for, so the per-request CPU shows it too.
    assert req_cpu1 == pytest.approx(cpu1, rel=0.05) and req_cpu0 == pytest.approx(cpu0)


def test_polling_stops_when_the_device_is_slower_than_the_window():
    """With an 80 µs device every wait for a completion exceeds 32.768 µs, which resets the
    window: requests still kick and the thread still sleeps (QEMU's adaptive rule)."""
    pv = ParavirtualParams(blk_backend="qemu-io-uring")
    result = run(scenario(BlockIO(iodepth=1), pv, disk=DISK), 0, max_requests=100,
                 records=True)
    assert all(r.notifications == 1 for r in result.records)


def test_the_thread_pool_bounds_requests_in_flight():
    """aio=threads: each request holds a pool worker for its blocking syscall, so at most
    ``blk_thread_pool_size`` are at the disk at once (the disk's channels are not the limit)."""
    disk = DiskParams(service_cv=0.0, channels=64)
    lat = {}
    for size in (2, 64):
        pv = ParavirtualParams(blk_thread_pool_size=size, blk_iothread_poll_us=0.0)
        result = run(scenario(BlockIO(iodepth=32), pv, disk=disk), 0, max_requests=400,
                     records=True)
        lat[size] = sum(r.latency_us for r in result.records) / len(result.records)
    # Two workers serve 32 outstanding requests in ~16 rounds of the 80 µs access.
    assert lat[2] > 10 * DEVICE_US
    assert lat[64] < 3 * DEVICE_US


def test_block_backend_settings_are_validated():
    with pytest.raises(ConfigError, match="blk_backend"):
        ParavirtualParams(blk_backend="vhost-blk")
    with pytest.raises(ConfigError, match="blk_backend"):
        ParavirtualParams(backend="xen", blk_backend="qemu-aio")
    with pytest.raises(ConfigError, match="blk_iothread_poll_us"):
        ParavirtualParams(blk_iothread_poll_us=-1.0)


def test_a_polling_reactor_competes_with_the_guest_for_host_cores():
    """vhost-user-blk in poll mode holds a host core whenever it has nothing to do: on a
    one-core host the guest's vCPU waits for it (a slice at a time) to submit each request,
    while in interrupt mode the reactor sleeps and the vCPU runs."""
    latency = {}
    for poll_us in (0.0, 1.0):
        pv = ParavirtualParams(blk_backend="vhost-user-blk", blk_iothread_poll_us=poll_us)
        result = run(scenario(BlockIO(iodepth=1), pv, disk=DISK,
                              host=dataclasses.replace(HOST, cores=1)), 0, max_requests=20,
                     records=True)
        latency[poll_us] = sum(r.latency_us for r in result.records) / len(result.records)
    assert latency[0.0] < 2 * DEVICE_US
    assert latency[1.0] > REACTOR_SLICE_US        # the vCPU waited out a polling slice
