"""TCP as a conversation, transmit side: the guest that sends a bulk stream takes its peer's
pure ACKs through its path's receive machinery (virtlab.tcp).

One burst in flight, one burst sent (exact): the run with ACKs minus the same run without them
is the ACKs' wire time plus what one receive of a header-only packet costs on the path, step
by step, computed here from the parameters. ACKs per burst follow the delayed-ACK rule (one
per ``ack_every_segments`` packets, one for a remainder; a GRO'd burst is one packet).
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import wire_us
from virtlab import BulkStream, GuestSpec, Scenario, run
from virtlab.cli import main
from virtlab.hardware import HostParams, HypervisorParams, NicParams
from virtlab.paths.container import ContainerParams
from virtlab.paths.emulation.settings import EmulatedParams
from virtlab.paths.paravirtual import ParavirtualParams
from virtlab.tcp import pure_acks
from virtlab.trace import ListTracer
from virtlab.units import bytes_per_us_from_gbps, cycles_to_us

UNIT = 65536  # the default stream's burst: 8 KiB writes handed down as one 64 KiB TSO segment
TAKEN = "sender receives a pure ACK"


def _stream(approach: str, *, acks: bool = True, window: int = UNIT, **tables) -> Scenario:
    return Scenario(duration_us=1e6, warmup_us=0.0, guests=(GuestSpec(
        name="g", approach=approach, vcpus=1, workloads=(
            BulkStream(direction="transmit", window_bytes=window, acks=acks),)),), **tables)


def _one(scenario: Scenario):
    tracer = ListTracer()
    (record,) = run(scenario, seed=0, max_requests=1, records=True, tracer=tracer).records
    taken = [r.t_us for r in tracer.records if r.kind == "ack" and r.detail == TAKEN]
    return record, taken


def _pair(approach: str, **tables):
    """The one burst with and without the peer's ACKs."""
    with_acks, taken = _one(_stream(approach, **tables))
    without, none = _one(_stream(approach, acks=False, **tables))
    assert none == []
    return with_acks, without, taken


def _wire_us(s: Scenario, nbytes: int) -> float:
    return wire_us(nbytes, s.nic)


def _us(s: Scenario, cycles: float) -> float:
    return cycles_to_us(cycles, s.host.cpu_ghz)


@pytest.mark.parametrize("nbytes, segment, every, acks", [
    (65536, 65536, 2, 1),     # one GRO'd burst: the ACK at its end
    (8192, 1448, 2, 3),       # 6 MTU packets (the last short): every second one
    (8192, 1448, 1, 6),       # quick ACKs: every packet
    (5792, 1448, 2, 2),       # 4 full packets
    (1, 1448, 2, 1),          # a lone short packet is acknowledged too
])
def test_delayed_ack_count(nbytes, segment, every, acks):
    assert pure_acks(nbytes, segment, every) == acks


def test_native_sender_takes_one_ack_per_burst_at_the_cost_of_a_receive():
    s = _stream("native")
    h = s.host
    rec, base, taken = _pair("native")
    assert len(taken) == 1
    # The ACK leaves the peer when the burst has reached it, crosses the wire, and the host's
    # NAPI instance (asleep again since the burst's transmit completion) takes an interrupt
    # and runs the stack once: no application wake-up, no copy.
    assert taken[0] == pytest.approx(base.latency_us + _wire_us(s, 0), abs=1e-9)
    assert rec.latency_us - base.latency_us == pytest.approx(
        _wire_us(s, 0) + h.irq_us + h.stack_pkt_us, abs=1e-9)
    assert rec.interrupts - base.interrupts == 1
    assert rec.cpu_host_kernel_us - base.cpu_host_kernel_us == pytest.approx(
        h.irq_us + h.stack_pkt_us, abs=1e-9)


def test_container_sender_pays_the_veth_hop_and_cgroup_charge_per_ack():
    c = ContainerParams()
    s = _stream("container")
    h = s.host
    rec, base, taken = _pair("container")
    assert len(taken) == 1
    assert rec.latency_us - base.latency_us == pytest.approx(
        _wire_us(s, 0) + h.irq_us + h.stack_pkt_us + c.veth_hop_us + c.cgroup_charge_us,
        abs=1e-9)
    assert rec.interrupts - base.interrupts == 1


@pytest.mark.parametrize("preset", ["modern", "modern-apicv"])
def test_passthrough_sender_takes_the_ack_as_a_device_interrupt(preset):
    hv = HypervisorParams(cpu_support=preset)
    s = _stream("passthrough", hypervisor=hv)
    h, hv = s.host, s.hypervisor
    rec, base, taken = _pair("passthrough", hypervisor=hv)
    assert len(taken) == 1
    exit_us = _us(s, hv.exit_kernel_cycles)
    posted = hv.posted_interrupts
    eoi = 0 if posted or not hv.eoi_exit else 1
    # The vCPU halted after the burst (within halt polling): VFIO's host handler and the
    # injection unless posted, the HLT exit, the guest's handler, its EOI; then the stack.
    delivery = ((0.0 if posted else h.irq_us + _us(s, hv.irq_inject_cycles) - exit_us)
                + exit_us + h.irq_us + eoi * exit_us)
    assert rec.latency_us - base.latency_us == pytest.approx(
        _wire_us(s, 0) + delivery + h.stack_pkt_us, abs=1e-9)
    assert rec.interrupts - base.interrupts == 1
    assert rec.exits - base.exits == 1 + eoi
    assert rec.exits_mmio == base.exits_mmio == 0


def test_virtio_sender_takes_the_ack_through_vhost_and_an_interrupt():
    pv = ParavirtualParams()
    s = _stream("paravirtual", paravirtual=pv)
    h, hv = s.host, s.hypervisor
    rec, base, taken = _pair("paravirtual", paravirtual=pv)
    assert len(taken) == 1
    exit_us = _us(s, hv.exit_kernel_cycles)
    eoi = 1 if hv.eoi_exit and not hv.posted_interrupts and not hv.pv_eoi else 0
    expected = (h.irq_us + h.bridge_pkt_us                               # host NIC, bridge, tap
                + h.ctx_switch_us + pv.vhost_wake_latency_us             # vhost worker wakes
                + pv.backend_pkt_us                                      # into an rx buffer
                + _us(s, hv.irq_inject_cycles)                           # irqfd injection
                + exit_us + h.irq_us + eoi * exit_us                     # HLT, handler, EOI
                + h.stack_pkt_us + pv.ring_op_us)                        # NAPI: reap + stack
    assert rec.latency_us - base.latency_us == pytest.approx(
        _wire_us(s, 0) + expected, abs=1e-9)
    assert rec.interrupts - base.interrupts == 1
    # The injection, the EOI (without PV EOI) and the HLT of the idle vCPU.
    assert (rec.exits_inject - base.exits_inject, rec.exits_eoi - base.exits_eoi,
            rec.exits_other - base.exits_other, rec.exits_mmio - base.exits_mmio) == (
        1, eoi, 1, 0)
    assert rec.notifications == base.notifications   # receiving needs no kick


def test_xen3_sender_takes_the_ack_through_netback_and_an_event_channel():
    pv = ParavirtualParams(backend="xen")
    s = _stream("paravirtual", paravirtual=pv)
    h, hv = s.host, s.hypervisor
    rec, base, taken = _pair("paravirtual", paravirtual=pv)
    assert len(taken) == 1
    hypercall = _us(s, hv.hypercall_cycles)
    inject = _us(s, hv.irq_inject_cycles)
    expected = (hv.xen_domain_switch_us + inject                 # schedule dom0, upcall
                + h.irq_us + h.bridge_pkt_us                 # dom0: NIC interrupt, bridge
                + h.ctx_switch_us + pv.backend_pkt_us        # netback's rx kthread
                + hypercall + pv.grant_op_us                 # GNTTABOP_copy of 0 B
                + hypercall                                  # EVTCHNOP_send
                + inject + hv.xen_domain_switch_us + h.irq_us    # the guest's upcall
                + h.stack_pkt_us + pv.ring_op_us)            # netfront rx + stack
    assert rec.latency_us - base.latency_us == pytest.approx(
        _wire_us(s, 0) + expected, abs=1e-9)
    assert rec.interrupts - base.interrupts == 1


def test_xen1_sender_takes_the_ack_by_page_flipping():
    pv = ParavirtualParams(backend="xen", xen_generation="1.x")
    s = _stream("paravirtual", paravirtual=pv)
    h, hv = s.host, s.hypervisor
    rec, base, taken = _pair("paravirtual", paravirtual=pv)
    assert len(taken) == 1
    expected = (h.irq_us + h.bridge_pkt_us                   # Xen: NIC interrupt, demux
                + pv.backend_pkt_us                          # VFR
                + 3 * pv.grant_op_us + pv.tlb_flush_us       # a page flipped for 66 bytes
                + _us(s, hv.irq_inject_cycles) + hv.xen_domain_switch_us + h.irq_us   # upcall
                + h.stack_pkt_us + pv.ring_op_us)
    assert rec.latency_us - base.latency_us == pytest.approx(
        _wire_us(s, 0) + expected, abs=1e-9)
    assert rec.interrupts - base.interrupts == 1


def test_emulated_sender_takes_the_ack_as_an_e1000_receive():
    # Mitigation off: QEMU's 128 µs timer, armed by the transmit-done interrupt, would hold
    # the ACK's interrupt back (tests/test_emulated_interrupts.py covers that).
    unmitigated = EmulatedParams(irq_min_interval_us=0.0)
    s = _stream("emulated", emulated=unmitigated)
    h, hv, e = s.host, s.hypervisor, s.emulated
    nic = e.nic
    rec, base, taken = _pair("emulated", emulated=unmitigated)
    assert len(taken) == 1
    kernel = _us(s, hv.exit_kernel_cycles)
    user = kernel * hv.user_exit_factor
    access = _us(s, e.device_access_cycles)

    def exit_us(a) -> float:
        if a.handler == "hypervisor":
            return kernel
        if (hv.coalesced_mmio and a.coalescible and a.space == "mmio") or (
                e.device_model_location == "kernel"):
            return kernel
        return user

    def model_us(a) -> float:
        return 0.0 if a.handler == "hypervisor" else access

    entry = sum(exit_us(a) + model_us(a) for a in nic.irq_entry)
    eoi = 1 if hv.eoi_exit and not hv.posted_interrupts else 0
    inject = 0.0 if hv.posted_interrupts else _us(s, hv.irq_inject_cycles)
    expected = (h.irq_us + h.bridge_pkt_us                           # host NIC, bridge
                + h.ctx_switch_us + h.syscall_us                     # I/O thread wakes, reads
                + _us(s, e.rx_frame_cycles)                          # device model: one frame
                + kernel + inject + h.irq_us + eoi * kernel          # HLT, injection, handler
                + entry                                              # ICR read, IMC write...
                + h.stack_pkt_us)                                    # guest stack
    assert rec.latency_us - base.latency_us == pytest.approx(
        _wire_us(s, 0) + expected, abs=1e-9)
    accesses = nic.irq_entry + nic.irq_exit + nic.rx_refill   # one frame: one refill
    assert rec.exits_mmio - base.exits_mmio == sum(a.space == "mmio" for a in accesses)
    assert rec.exits_pio - base.exits_pio == sum(a.space == "pio" for a in accesses)
    assert (rec.exits_inject - base.exits_inject, rec.exits_eoi - base.exits_eoi,
            rec.exits_other - base.exits_other) == (0 if hv.posted_interrupts else 1, eoi, 1)
    assert rec.interrupts - base.interrupts == 1


def test_a_2003_stack_takes_an_ack_every_second_segment_spaced_as_the_data():
    # No TSO (Linux 2.4): an 8 KiB burst is 6 packets; the peer ACKs every second one, each
    # ACK as far behind the previous one as two full segments on the wire.
    nic = NicParams(line_rate_gbps=1.0, tso_bytes=1448)
    s = _stream("native", window=8192, nic=nic)
    h = s.host
    rec, base, taken = _pair("native", window=8192, nic=nic)
    assert len(taken) == 3
    spacing = 2 * (1448 + nic.frame_overhead_bytes) / bytes_per_us_from_gbps(1.0)
    ack_wire = _wire_us(s, 0)
    assert taken == pytest.approx([base.latency_us + ack_wire + k * spacing for k in range(3)],
                                  abs=1e-9)
    # 24.6 µs apart, each finds NAPI asleep again: three interrupts; the window slides when
    # the last has been through the stack.
    assert spacing > h.irq_us + h.stack_pkt_us
    assert rec.interrupts - base.interrupts == 3
    assert rec.latency_us == pytest.approx(taken[-1] + h.irq_us + h.stack_pkt_us, abs=1e-9)
    assert rec.cpu_host_kernel_us - base.cpu_host_kernel_us == pytest.approx(
        3 * (h.irq_us + h.stack_pkt_us), abs=1e-9)


def test_one_flows_acks_are_taken_in_order_one_at_a_time():
    # At 40 Gb/s the 2003-style ACKs come 0.6 µs apart, faster than the stack takes one
    # (GRO does not merge them): each waits for the previous one, then takes its own pass.
    nic = NicParams(tso_bytes=1448, line_rate_gbps=40.0)
    host = HostParams()
    s = _stream("native", window=8192, nic=nic)
    spacing = 2 * (1448 + nic.frame_overhead_bytes) / bytes_per_us_from_gbps(nic.line_rate_gbps)
    per_ack = host.irq_us + host.stack_pkt_us
    assert spacing < per_ack
    rec, base, taken = _pair("native", window=8192, nic=nic)
    first = base.latency_us + _wire_us(s, 0)
    assert taken == pytest.approx([first + k * per_ack for k in range(3)], abs=1e-9)
    assert rec.latency_us == pytest.approx(first + 3 * per_ack, abs=1e-9)
    assert rec.interrupts - base.interrupts == 3


@pytest.mark.parametrize("approach", ["emulated", "paravirtual"])
def test_latency_phases_still_add_up_with_several_acks(approach):
    from virtlab.records import PHASES

    for line_rate in (1.0, 10.0):   # ACKs slower, then faster, than the path takes them
        nic = NicParams(tso_bytes=1448, line_rate_gbps=line_rate)
        rec, _taken = _one(_stream(approach, window=8192, nic=nic))
        phases = [getattr(rec, f"lat_{p}_us") for p in PHASES]
        assert min(phases) >= -1e-9
        assert sum(phases) == pytest.approx(rec.latency_us, abs=1e-9)


def test_saturated_sender_pays_its_acks_every_burst():
    # Four bursts in flight for a while: every completed burst took exactly its ACK's stack
    # work (native: CPU per burst = the one-way stream's + one stack pass + at most an irq).
    s = dataclasses.replace(_stream("native", window=4 * UNIT), duration_us=3_000.0,
                            warmup_us=500.0)
    off = dataclasses.replace(s, guests=(dataclasses.replace(s.guests[0], workloads=(
        BulkStream(direction="transmit", window_bytes=4 * UNIT, acks=False),)),))
    on_sum, = run(s, seed=0).summaries
    off_sum, = run(off, seed=0).summaries
    h = s.host
    extra = on_sum.cpu_host_kernel_us - off_sum.cpu_host_kernel_us
    assert h.stack_pkt_us <= extra <= h.stack_pkt_us + h.irq_us + 1e-9


def test_trace_shows_the_peers_ack_as_a_receive_on_the_sender(tmp_path, capsys):
    config = tmp_path / "tx.toml"
    config.write_text('name = "tx"\n[[guests]]\nname = "vm"\napproach = "emulated"\n'
                      '[[guests.workloads]]\nkind = "stream"\n', encoding="utf-8")
    assert main(["trace", "--config", str(config), "--requests", "1"]) == 0
    out = capsys.readouterr().out
    assert "peer sends pure ACK 1 of 1" in out
    after = out[out.index(TAKEN):]
    # The e1000 receive: the host's NIC and bridge, the I/O thread, the guest's interrupt
    # handler reading ICR, and the guest's stack.
    for step in ("host NIC interrupt", "wake VMM I/O thread", "ICR", "stack rx"):
        assert step in after, step


def test_acks_false_is_a_one_way_stream_in_a_scenario_file(tmp_path, capsys):
    config = tmp_path / "tx.toml"
    config.write_text('name = "tx"\n[[guests]]\nname = "vm"\napproach = "native"\n'
                      '[[guests.workloads]]\nkind = "stream"\nacks = false\n',
                      encoding="utf-8")
    assert main(["trace", "--config", str(config), "--requests", "1"]) == 0
    assert "pure ACK" not in capsys.readouterr().out
    config.write_text(config.read_text().replace("acks = false", 'acks = "no"'))
    assert main(["trace", "--config", str(config), "--requests", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("virtlab: error:") and "acks" in err and err.count("\n") == 1


@pytest.mark.parametrize("direction", ["transmit", "receive"])
@pytest.mark.parametrize("approach", ["native", "paravirtual", "emulated"])
def test_every_completed_burst_was_acknowledged_exactly(direction, approach):
    """Conservation at both ends: ACKs taken (sender) or sent (receiver) = ACKs per burst x
    completed bursts + those of bursts still in flight, never more."""
    import simpy

    from virtlab.model import build
    from virtlab.rng import Streams

    nic = NicParams(tso_bytes=1448)   # three ACKs per 8 KiB burst
    s = Scenario(duration_us=2_000.0, warmup_us=0.0, nic=nic, guests=(GuestSpec(
        name="g", approach=approach, vcpus=1, workloads=(
            BulkStream(direction=direction, window_bytes=4 * 8192),)),))
    env = simpy.Environment()
    model = build(env, s, Streams(0, 0), keep_requests=True)
    model.start()
    env.run(until=s.duration_us)
    (runner,) = model.runners
    acks = runner.acks
    assert acks is not None and acks.per_burst == 3
    done = len(runner.completed)
    assert done > 10
    counted = acks.taken if direction == "transmit" else acks.sent
    assert (acks.sent if direction == "transmit" else acks.taken) == 0
    assert 3 * done <= counted <= 3 * (done + len(runner.in_flight))
