"""The paravirtual path on the command line: errors, traces of ring events, ring tables."""

from __future__ import annotations

import re

import pytest

from virtlab.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("size", ["100", "3", "65536"])
def test_ring_size_not_a_power_of_two_is_one_line_and_exit_2(capsys, size):
    """A bad ring size names the field and what is allowed, in one line, with status 2."""
    status, out, err = run_cli(capsys, "compare", "--set", f"paravirtual.ring_size={size}")
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "paravirtual.ring_size" in lines[0] and "power of two" in lines[0]


def test_trace_shows_one_line_per_ring_event_with_the_indexes(capsys):
    """Starting near 65535 the trace shows avail.idx wrapping to 0 and the kick rule used."""
    status, out, _ = run_cli(capsys, "trace", "--approach", "paravirtual", "--requests", "3",
                             "--set", "paravirtual.start_index=65534")
    assert status == 0
    ring_lines = [line for line in out.splitlines() if "virtio-net.txq" in line]
    kinds = [line.split()[4] for line in ring_lines]
    assert {"avail", "kick", "pop"} <= set(kinds)
    assert any("avail.idx=65535" in line for line in ring_lines)
    assert any("avail.idx=0 " in line for line in ring_lines)
    assert any("in [65535,0)? -> notify" in line for line in ring_lines)
    assert "rings of net (backend vhost, event index):" in out


def test_trace_of_a_block_request_shows_the_three_descriptor_chain(capsys):
    """virtio-blk: header + data + status, popped by the backend, reaped by the guest."""
    status, out, _ = run_cli(capsys, "trace", "--approach", "paravirtual", "--workload",
                             "block")
    assert status == 0
    assert re.search(r"virtio-blk\.vq +avail +chain head=\d+: header \+ 1 data \+ status", out)
    assert re.search(r"virtio-blk\.vq +pop +head=\d+ \(3 elements\)", out)
    assert re.search(r"virtio-blk\.vq +reap", out)


def test_trace_of_xen_shows_ring_indexes_and_event_channels(capsys):
    """Xen: pushes with req_prod/req_event, event-channel sends and grant hypercalls."""
    status, out, _ = run_cli(capsys, "trace", "--approach", "paravirtual", "--set",
                             "paravirtual.backend=xen", "--requests", "2")
    assert status == 0
    assert "evtchn-send" in out and "req_prod=" in out and "GNTTABOP" in out
    assert "driver-domain" in out


def test_breakdown_prints_the_ring_table(capsys):
    """compare --breakdown adds kicks, interrupts, occupancy and batch sizes per workload."""
    status, out, _ = run_cli(capsys, "compare", "-r", "1", "--duration", "6ms", "--warmup",
                             "1ms", "--approaches", "paravirtual,emulated", "--breakdown")
    assert status == 0
    assert "Paravirtual rings" in out
    table = out.split("Paravirtual rings", 1)[1].splitlines()
    assert any(line.startswith("net.rr") and "paravirtual" in line for line in table)
    assert not any("emulated" in line for line in table)
