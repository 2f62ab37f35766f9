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

__all__ = ["Link", "Nic", "Disk", "binding_limit", "BINDING_UTILISATION"]


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
    """A flash device (hardware queues, ``channels`` parallel accesses) or a rotating disk.

    Service of one I/O: the command is fetched from its hardware queue, at most one per
    ``1 / queue_iops`` per queue (FIFO; ``queue_iops = 0``: no limit); then the access
    (flash: mean per direction with ``service_cv``; rotating: seek + rotational delay unless
    sequential) on one of ``channels``, followed by the transfer through the shared interface,
    in the order the accesses end. The fetch is pipelined: it delays a command only behind
    the fetches of earlier commands of its queue, and a lone command's fetch is part of its
    access time (a fetch stage of ``1 / queue_iops`` followed by the rest of the access gives
    the same completion times). With one channel and no queue limit the device is an exact
    single-server FIFO queue (one timeout per I/O); with several, an M/G/c station followed by
    a FIFO interface (two timeouts per I/O).

    Three limits can bind, and :meth:`limits` reports how busy each was: the busiest queue's
    command rate, the internal parallelism (channels busy with accesses) and the interface.
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
        #: Time between two command fetches of one hardware queue (0: no per-queue limit).
        self.fetch_gap_us = US_PER_S / params.queue_iops if params.queue_iops > 0.0 else 0.0
        #: Per hardware queue: when its next command can be fetched, and commands fetched.
        self.queue_free_at_us = [0.0] * params.queues
        self.queue_commands = [0] * params.queues
        self.completed = 0
        self.busy_us = 0.0
        #: Channel time spent in accesses only (without waiting for or using the interface).
        self.access_busy_us = 0.0

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

    def serve(self, req: Request, nbytes: int, write: bool, sequential: bool, queue: int = 0
              ) -> ProcessGenerator:
        """Serve one I/O for ``req``; return when its data transfer has finished.

        ``queue`` is the hardware queue it was submitted on (modulo ``queues``).
        """
        env = self.env
        gap = self.fetch_gap_us
        if gap > 0.0:
            queue %= len(self.queue_free_at_us)
            self.queue_commands[queue] += 1
            fetch_at = self.queue_free_at_us[queue]
            now = env.now
            if fetch_at > now:
                self.queue_free_at_us[queue] = fetch_at + gap
                if self.tracer.enabled:
                    self.tracer.emit(now, "host.disk", "queue", req.id,
                                     f"hardware queue {queue} busy: fetched at {fetch_at:.3f} µs")
                yield env.timeout(fetch_at - now)
            else:
                self.queue_free_at_us[queue] = now + gap
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
        self.access_busy_us += access_us
        self.channels.release()
        self.completed += 1

    def limits(self, span_us: float) -> dict[str, float]:
        """How busy each of the device's limits was over ``span_us`` (fractions, 0 to 1).

        ``queue``: the busiest hardware queue's fetches x ``1 / queue_iops`` (0 without a
        queue limit); ``parallelism``: channel time in accesses / (channels x span);
        ``interface``: transfer time / span. The largest is the limit that binds; when all
        are well below 1 the device is not the bottleneck (its latency x the I/Os in flight
        is: Little's law).
        """
        if span_us <= 0.0:
            return {"queue": 0.0, "parallelism": 0.0, "interface": 0.0}
        return {"queue": max(self.queue_commands) * self.fetch_gap_us / span_us,
                "parallelism": self.access_busy_us / (self.channels.capacity * span_us),
                "interface": self.interface.busy_us / span_us}

    def _trace(self, req: Request, write: bool, nbytes: int, access_us: float,
               finish_us: float) -> None:
        if self.tracer.enabled:
            kind = "write" if write else "read"
            self.tracer.emit(self.env.now, "host.disk", "device", req.id,
                             f"{kind} {nbytes} B: access {access_us:.3f} µs, done at "
                             f"{finish_us:.3f} µs")


#: Utilisation above which a device limit is reported as binding.
BINDING_UTILISATION = 0.9


def binding_limit(limits: dict[str, float]) -> str:
    """Name the limit that binds.

    The busiest one if at least ``BINDING_UTILISATION`` busy, else ``"latency"`` (too few I/Os
    in flight to saturate the device).
    """
    name = max(limits, key=lambda key: limits[key])
    return name if limits[name] >= BINDING_UTILISATION else "latency"
