"""The native block device's three limits: per-queue command rate, internal parallelism and the
interface, and which one binds.

Exact checks on the device alone (commands fetched from one hardware queue are spaced by
``1 / queue_iops``; different queues are independent), then whole runs: 4 KiB random reads at a
high queue depth are bound by the device's parallelism, not its interface; 1 MiB sequential
reads by the interface; one submitting CPU with a slow queue by the queue.
"""

from __future__ import annotations

import pytest
import simpy

from virtlab import BlockIO, GuestSpec, Scenario, run
from virtlab.devices import Disk, binding_limit
from virtlab.hardware import DiskParams, HostParams
from virtlab.records import Request
from virtlab.rng import Streams


def _finish_times(params: DiskParams, queues: list[int]) -> list[float]:
    """Submit one read per entry of ``queues`` at t=0; return each one's completion time."""
    env = simpy.Environment()
    disk = Disk(env, params, Streams(0).get("host.disk.service"))
    done: list[float] = [0.0] * len(queues)

    def one(index: int, queue: int):
        req = Request(index, "g", "w", "native", "block", 4096, 0.0)
        yield from disk.serve(req, 4096, False, False, queue)
        done[index] = env.now

    for index, queue in enumerate(queues):
        env.process(one(index, queue))
    env.run()
    return done


DET = dict(service_cv=0.0, read_access_us=80.0, interface_mbytes_per_s=1e6, channels=64)


def test_commands_of_one_queue_are_fetched_one_per_gap():
    params = DiskParams(queue_iops=250_000.0, **DET)  # 4 µs between fetches
    transfer = 4096 / 1e6
    assert _finish_times(params, [0, 0, 0]) == pytest.approx(
        [80.0 + transfer, 84.0 + transfer, 88.0 + transfer], abs=1e-9)


def test_queues_fetch_independently_and_zero_means_no_limit():
    params = DiskParams(queue_iops=250_000.0, **DET)
    transfer = 4096 / 1e6
    # Two queues: the second command of each waits one gap, not three (accesses ending
    # together then share the interface one transfer after the other).
    assert _finish_times(params, [0, 1, 0, 1]) == pytest.approx(
        [80.0 + transfer, 80.0 + 2 * transfer, 84.0 + transfer, 84.0 + 2 * transfer],
        abs=1e-9)
    unlimited = DiskParams(queue_iops=0.0, **DET)
    assert _finish_times(unlimited, [0, 0, 0]) == pytest.approx(
        [80.0 + transfer, 80.0 + 2 * transfer, 80.0 + 3 * transfer], abs=1e-9)


def test_queue_index_wraps_around_the_device_queues():
    params = DiskParams(queue_iops=250_000.0, queues=2, **DET)
    # Queue 2 is queue 0 of a two-queue device.
    assert _finish_times(params, [0, 2]) == pytest.approx([80.0 + 4096 / 1e6,
                                                          84.0 + 4096 / 1e6], abs=1e-9)


@pytest.mark.parametrize(("limits", "binds"), [
    ({"queue": 0.2, "parallelism": 0.97, "interface": 0.4}, "parallelism"),
    ({"queue": 0.1, "parallelism": 0.3, "interface": 0.99}, "interface"),
    ({"queue": 0.95, "parallelism": 0.5, "interface": 0.1}, "queue"),
    ({"queue": 0.1, "parallelism": 0.6, "interface": 0.2}, "latency"),
])
def test_the_busiest_limit_binds_only_when_nearly_saturated(limits, binds):
    assert binding_limit(limits) == binds


def _native_block(workload: BlockIO, cpus: int, disk: DiskParams | None = None) -> Scenario:
    return Scenario(duration_us=6_000.0, warmup_us=1_000.0, host=HostParams(cores=16),
                    disk=disk or DiskParams(), guests=(GuestSpec(
                        name="g", approach="native", vcpus=cpus, workloads=(workload,)),))


def _limits(scenario: Scenario) -> tuple[dict[str, float], float]:
    result = run(scenario, seed=0)
    (summary,) = result.summaries
    limits = {"queue": summary.disk_queue_util, "parallelism": summary.disk_parallelism_util,
              "interface": summary.disk_interface_util}
    return limits, summary.throughput_per_s


def test_small_random_reads_at_high_queue_depth_are_device_bound_not_interface_bound():
    disk = DiskParams()
    limits, iops = _limits(_native_block(BlockIO(block_bytes=4096, iodepth=64, jobs=4), 8))
    assert binding_limit(limits) == "parallelism", limits
    assert limits["interface"] < 0.75, limits
    # The device's own ceiling: channels / mean access time (the interface would allow more).
    ceiling = disk.channels / disk.read_access_us * 1e6
    assert iops == pytest.approx(ceiling, rel=0.08)
    assert disk.interface_mbytes_per_s * 1e6 / 4096 > 1.5 * ceiling


def test_large_sequential_reads_are_interface_bound():
    disk = DiskParams()
    limits, iops = _limits(_native_block(
        BlockIO(block_bytes=1 << 20, pattern="sequential", iodepth=16), 2))
    assert binding_limit(limits) == "interface", limits
    assert iops * (1 << 20) == pytest.approx(disk.interface_mbytes_per_s * 1e6, rel=0.05)


def test_one_cpu_on_a_slow_queue_is_queue_bound():
    disk = DiskParams(queue_iops=100_000.0)
    limits, iops = _limits(_native_block(BlockIO(block_bytes=4096, iodepth=64), 1, disk))
    assert binding_limit(limits) == "queue", limits
    assert iops == pytest.approx(100_000.0, rel=0.03)
    # Two CPUs submit on two queues: the queue limit no longer binds.
    two, _ = _limits(_native_block(BlockIO(block_bytes=4096, iodepth=64), 2, disk))
    assert two["queue"] < limits["queue"]


def test_compare_reports_which_disk_limit_binds(capsys):
    import json

    from virtlab.cli import main

    args = ["compare", "--approaches", "native,passthrough", "-r", "1", "--duration", "3ms",
            "--warmup", "0.5ms"]
    assert main(args) == 0
    out = capsys.readouterr().out
    table = out[out.index("Disk limits"):].splitlines()
    rows = [line.split() for line in table[2:] if line.startswith("disk.fio")]
    assert [row[1] for row in rows] == ["native", "passthrough"]
    assert all(row[-1] in ("queue", "parallelism", "interface", "latency") for row in rows)
    assert main([*args, "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    disk = {e["approach"]: e["disk"] for e in entries if e["kind"] == "block"}
    assert set(disk["native"]) == {"queue_util", "parallelism_util", "interface_util", "binds"}
    assert all(e["disk"] is None for e in entries if e["kind"] != "block")
