"""TCP as a conversation: data segments one way, pure ACKs the other (issue 10).

A bulk stream's receiver acknowledges what its stack sees with pure ACKs (delayed ACK: one per
``nic.ack_every_segments`` packets, and one at the end of a burst; a GRO'd burst of up to
``nic.tso_bytes`` is one packet: S65). Both ends pay for them:

* a *receiving* guest transmits its ACKs through its path, as any transmit
  (:meth:`ConversationAcks.send_acks`);
* a *transmitting* guest takes its peer's ACKs through its path's receive machinery, as any
  receive (:meth:`ConversationAcks.take_acks`): the NIC's receive link, the path's interrupt
  or notification (with its NAPI or interrupt suppression), and the kernel's TCP work per ACK
  (``tcp_ack`` and the retransmit queue's clean-up: one packet's ``stack_pkt_us``,
  S180). ``IOPath.receive(req, 0)`` is such a pure ACK: no application is woken, nothing is
  copied.

GRO does not merge pure ACKs: ``tcp_gro_receive`` flushes a segment without payload (its
``len - 1`` wraps around and exceeds the MSS) and any segment whose ``ack_seq`` differs from the
held one's (S181), so each ACK reaches the stack as its own packet; what the receive machinery
does coalesce is the *interrupts* (NAPI, virtio's suppression, e1000's mitigation), and the
paths already do that.

Timing: the peer (a remote machine, outside the model) sends the ACKs of one burst when the
burst's last byte has reached it, each ``ack_every_segments`` full segments' wire time after
the previous one (the spacing the acknowledged data had at the line rate). The burst's request
completes, and the window slides, when the sender's stack has taken its last ACK.

Request/response traffic needs no pure ACKs: each side's data carries the acknowledgement.
"""

from __future__ import annotations

import simpy
from simpy.events import ProcessGenerator

from virtlab.host import Host
from virtlab.paths import IOPath
from virtlab.records import Request

__all__ = ["pure_acks", "ConversationAcks"]


def pure_acks(nbytes: int, segment_bytes: int, ack_every_segments: int) -> int:
    """Pure ACKs a receiver sends for a burst of ``nbytes``.

    The burst arrives as packets of up to ``segment_bytes``; the receiver acknowledges every
    ``ack_every_segments`` packets, and a remainder once (at the end of the burst).
    """
    packets = max(1, -(-nbytes // segment_bytes))
    return -(-packets // ack_every_segments)


class ConversationAcks:
    """The pure ACKs of one bulk stream's bursts of ``burst_bytes``, at both ends.

    Invariant: every burst is acknowledged by exactly :attr:`per_burst` ACKs (at least one);
    the ACK counters of the run grow by that many per burst taken or sent.
    """

    def __init__(self, env: simpy.Environment, host: Host, path: IOPath, scope: str,
                 burst_bytes: int) -> None:
        self.env = env
        self.host = host
        self.path = path
        self.scope = scope
        nic = host.nic_params
        segment = min(nic.tso_bytes, burst_bytes)
        #: ACKs per burst (S65: delayed ACK, one per ``ack_every_segments`` packets).
        self.per_burst = pure_acks(burst_bytes, nic.tso_bytes, nic.ack_every_segments)
        #: Gap between two of the peer's ACKs: the wire time of the data each acknowledges.
        self.spacing_us = (host.nic.wire_bytes(segment) * nic.ack_every_segments
                           / host.nic.rx.bytes_per_us)
        #: ACKs taken by the transmitting guest's stack, and ACKs its receiving stack sent.
        self.taken = 0
        self.sent = 0

    def send_acks(self, req: Request) -> ProcessGenerator:
        """The receiver acknowledges one burst: its ACKs cost what any transmit costs."""
        for _ in range(self.per_burst):
            if self.host.tracer.enabled:
                self.host.trace(self.scope, "ack", req.id, "receiver transmits a pure ACK")
            yield from self.path.send(req, 0)
            self.sent += 1

    def take_acks(self, req: Request) -> ProcessGenerator:
        """The sender takes the peer's ACKs of one burst that has just reached the peer.

        The ACKs cross the receive link at their own times (a separate process sends them);
        the sender's path takes them in order, one at a time, as its stack processes one
        flow's packets (Linux: under the socket lock). An ACK that arrives while the previous
        one is still being taken waits for it and then raises its own interrupt if the
        receive machinery went back to sleep (a simplification: real NAPI would often take
        it in the same poll). Returns when the last ACK has been taken.
        """
        env = self.env
        if self.per_burst == 1:
            yield from self._take(req, self._offer(req, 0))
            return
        arrivals = [env.event() for _ in range(self.per_burst)]
        env.process(self._peer_sends(req, arrivals))
        for arrived in arrivals:
            arrive_us = yield arrived
            yield from self._take(req, arrive_us)

    def _take(self, req: Request, arrive_us: float) -> ProcessGenerator:
        """Wait for the ACK to reach the host's NIC (if it has not yet), then take it."""
        env = self.env
        if arrive_us > env.now:
            yield env.timeout(arrive_us - env.now)
        if self.host.tracer.enabled:
            self.host.trace(self.scope, "ack", req.id, "sender receives a pure ACK")
        yield from self.path.receive(req, 0)
        self.taken += 1

    def _peer_sends(self, req: Request, arrivals: list[simpy.Event]) -> ProcessGenerator:
        """The peer sends the burst's ACKs ``spacing_us`` apart; each event gets its arrival."""
        for index, arrived in enumerate(arrivals):
            if index:
                yield self.env.timeout(self.spacing_us)
            arrived.succeed(self._offer(req, index))

    def _offer(self, req: Request, index: int) -> float:
        """Put one ACK on the receive link now; return when it reaches the host's NIC."""
        host = self.host
        nic = host.nic
        arrive_us = nic.rx.offer(self.env.now, nic.wire_bytes(0))
        if host.tracer.enabled:
            host.trace("nic.rx", "wire", req.id, f"peer sends pure ACK {index + 1} of "
                                                 f"{self.per_burst}, at host NIC "
                                                 f"{arrive_us:.3f} µs")
        return arrive_us
