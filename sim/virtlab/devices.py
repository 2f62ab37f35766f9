"""Physical devices: the NIC's two link directions and the disk.

Both are first come, first served. A link is modelled without per-packet events: because it
serves in order at a fixed rate, the moment a transfer finishes follows from the moment the
previous one finished (``free_at``), so a 64 KiB TSO segment costs one computation, not 46
wire-frame events.
"""

from __future__ import annotations

import math

import simpy
from simpy.events import ProcessGenerator

from virtlab.cpu import Semaphore
from virtlab.hardware import DiskParams, NicParams
from virtlab.records import Request
from virtlab.rng import Stream
from virtlab.trace import NullTracer, Tracer
from virtlab.units import US_PER_S, bytes_per_us_from_gbps, bytes_per_us_from_mbytes_per_s

__all__ = ["Link", "Nic", "Disk"]


class Link:
    """One direction of a wire (or a device interface): a FIFO serializer plus a latency.

    Invariant: transfers finish in the order they were offered; ``free_at_us`` never decreases.
    """

    __slots__ = ("bytes_per_us", "latency_us", "free_at_us", "bytes_sent", "busy_us")

    def __init__(self, bytes_per_us: float, latency_us: float) -> None:
        self.bytes_per_us = bytes_per_us
        self.latency_us = latency_us
        self.free_at_us = 0.0
        self.bytes_sent = 0
        self.busy_us = 0.0

    def offer(self, now_us: float, nbytes: int) -> float:
        """Queue ``nbytes`` at ``now_us``; return when the last byte reaches the far end."""
        start = now_us if now_us > self.free_at_us else self.free_at_us
        duration = nbytes / self.bytes_per_us
        self.free_at_us = start + duration
        self.bytes_sent += nbytes
        self.busy_us += duration
        return self.free_at_us + self.latency_us


class Nic:
    """The host's NIC: a transmit link to the peer and a receive link from it."""

    def __init__(self, params: NicParams) -> None:
        self.params = params
        rate = bytes_per_us_from_gbps(params.line_rate_gbps)
        self.tx = Link(rate, params.wire_latency_us)
        self.rx = Link(rate, params.wire_latency_us)

    def frames(self, payload_bytes: int) -> int:
        """Wire frames needed for ``payload_bytes`` of TCP payload (at least one)."""
        return max(1, math.ceil(payload_bytes / self.params.payload_per_frame_bytes))

    def wire_bytes(self, payload_bytes: int) -> int:
        """Bytes on the wire, framing included, for ``payload_bytes`` of payload."""
        return payload_bytes + self.frames(payload_bytes) * self.params.frame_overhead_bytes


class Disk:
    """A flash device (``channels`` parallel accesses) or a rotating disk (one at a time).

    Service of one I/O = access time (flash: mean per direction with ``service_cv``; rotating:
    seek + rotational delay unless sequential) followed by the transfer through the shared
    interface, in the order the accesses end. With one channel the device is an exact
    single-server FIFO queue (one timeout per I/O); with several, an M/G/c station followed by
    a FIFO interface (two timeouts per I/O).
    """

    def __init__(self, env: simpy.Environment, params: DiskParams, stream: Stream,
                 tracer: Tracer | None = None) -> None:
        self.env = env
        self.tracer: Tracer = tracer if tracer is not None else NullTracer()
        self.params = params
        self.stream = stream
        channels = 1 if params.kind == "rotating" else params.channels
        self.channels = Semaphore(env, "host.disk", channels)
        self.interface = Link(bytes_per_us_from_mbytes_per_s(params.interface_mbytes_per_s), 0.0)
        self.completed = 0
        self.busy_us = 0.0

    def access_us(self, write: bool, sequential: bool) -> float:
        """Draw the access time of one I/O."""
        params = self.params
        if params.kind == "rotating":
            if sequential:
                return 0.0
            rotation_us = US_PER_S * 60.0 / params.rpm
            return (2.0 * params.seek_us * self.stream.uniform()
                    + rotation_us * self.stream.uniform())
        mean = params.write_access_us if write else params.read_access_us
        cv = params.service_cv
        if cv == 0.0 or mean == 0.0:
            return mean
        if cv == 1.0:
            return self.stream.exponential(mean)
        return self.stream.gamma(mean, cv)

    def serve(self, req: Request, nbytes: int, write: bool, sequential: bool) -> ProcessGenerator:
        """Serve one I/O for ``req``; returns when its data transfer has finished."""
        env = self.env
        wait = self.channels.acquire()
        if wait is not None:
            yield wait
        start = env.now
        req.mark_started(start)
        access_us = self.access_us(write, sequential)
        if self.channels.capacity == 1:
            # One channel: the interface is idle whenever the channel is free, so the whole
            # service is known now and one timeout suffices.
            finish = self.interface.offer(start + access_us, nbytes)
            self._trace(req, write, nbytes, access_us, finish)
            yield env.timeout(finish - start)
        else:
            # Several channels: transfers queue for the interface in the order their accesses
            # end, which is only known once the access is over.
            yield env.timeout(access_us)
            finish = self.interface.offer(env.now, nbytes)
            self._trace(req, write, nbytes, access_us, finish)
            yield env.timeout(finish - env.now)
        self.busy_us += finish - start
        self.channels.release()
        self.completed += 1

    def _trace(self, req: Request, write: bool, nbytes: int, access_us: float,
               finish_us: float) -> None:
        if self.tracer.enabled:
            kind = "write" if write else "read"
            self.tracer.emit(self.env.now, "host.disk", "device", req.id,
                             f"{kind} {nbytes} B: access {access_us:.3f} µs, done at "
                             f"{finish_us:.3f} µs")
