"""Receive-side scaling: a NIC with several receive queues (``nic.queues``).

A connection's packets go to the queue its flow hash picks through the default indirection
table (entry i -> queue i % queues, 128 entries); each queue has its own interrupt and NAPI
poll. Checked here: which queues carry traffic is exactly what the hashes say, one connection
never spreads, more queues lift a server whose one NAPI instance bound it, and the paths whose
NIC has one queue say that the setting is ignored.
"""

from __future__ import annotations

import zlib

import pytest

from virtlab import run
from virtlab.advice import ignored_settings
from virtlab.api import scenario as build
from virtlab.saturation import find_bottleneck

KV = 'guests=[{{name="cache", approach="{approach}", vcpus=2, workloads=[{{kind="kv", ' \
     'connections={connections}}}]}}]'


def kv_scenario(approach: str, queues: int, connections: int, stack_pkt_us: float = 0.85):
    return build(set=[KV.format(approach=approach, connections=connections),
                      f"nic.queues={queues}", f"host.stack_pkt_us={stack_pkt_us}"],
                 duration="4ms", warmup="0.5ms")


def expected_queues(scope: str, connections: int, queues: int) -> set[int]:
    """Queues the test computes on its own: crc32 of each connection, table of 128 entries."""
    return {(zlib.crc32(f"{scope}:{c}".encode()) & 127) % queues for c in range(connections)}


def queues_with_traffic(result, nic_scope: str, queues: int) -> set[int]:
    names = [nic_scope] + [f"{nic_scope}{q}" for q in range(1, queues)]
    return {q for q, name in enumerate(names) if result.notifications[name] > 0}


@pytest.mark.parametrize(("approach", "nic_scope"),
                         [("native", "cache.nic"), ("container", "cache.nic"),
                          ("passthrough", "cache.vf-napi")])
@pytest.mark.parametrize(("queues", "connections"), [(8, 3), (4, 16), (5, 4)])
def test_the_queues_that_carry_traffic_are_those_the_hashes_pick(approach, nic_scope, queues,
                                                                 connections):
    result = run(kv_scenario(approach, queues, connections), 0)
    expected = expected_queues("cache.kv", connections, queues)
    assert queues_with_traffic(result, nic_scope, queues) == expected
    assert sum(result.completed.values()) > 100


def test_one_connection_stays_on_one_queue():
    # netperf-like request/response: its transactions in flight share one connection.
    scenario = build(set=["nic.queues=4", 'guests=[{name="rr", approach="native", '
                          'workloads=[{kind="rr", in_flight=4}]}]'],
                     duration="4ms", warmup="0.5ms")
    result = run(scenario, 0)
    used = queues_with_traffic(result, "rr.nic", 4)
    assert used == expected_queues("rr.rr", 1, 4)
    assert len(used) == 1


def test_a_wrong_table_size_would_be_caught():
    # The check above can fail: for 4 connections over 5 queues, a NIC that took the whole
    # hash modulo the queue count (no 128-entry indirection table) would use other queues.
    whole = {zlib.crc32(f"cache.kv:{c}".encode()) % 5 for c in range(4)}
    assert whole != expected_queues("cache.kv", 4, 5)


def test_more_queues_lift_a_server_bound_by_its_one_napi_instance():
    # At 5 µs per packet (a 2003-class stack) the cache's one NAPI instance binds first
    # (docs/servers.md); spread over two queues, the loops are no longer the bottleneck.
    [one] = find_bottleneck(kv_scenario("native", 1, 16, stack_pkt_us=5.0))
    [two] = find_bottleneck(kv_scenario("native", 2, 16, stack_pkt_us=5.0))
    assert one.binding == "kernel loop cache.nic"
    assert not two.binding.startswith("kernel loop")
    assert two.throughput_per_s > 1.15 * one.throughput_per_s
    assert two.utilisation["kernel loop cache.nic1"] > 0.3


def test_single_queue_paths_say_the_setting_is_ignored():
    scenario = kv_scenario("native", 2, 4)
    [warning] = ignored_settings(scenario, approaches=["native", "paravirtual"])
    assert "nic.queues = 2 is ignored by paravirtual" in warning
    assert ignored_settings(scenario, approaches=["native", "container", "passthrough"]) == []
    assert ignored_settings(kv_scenario("native", 1, 4),
                            approaches=["paravirtual", "emulated"]) == []
