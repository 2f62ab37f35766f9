"""Linux-VServer's token-bucket CPU scheduler (S41, S41b).

Each context has a bucket of ``tokens``. A running context consumes one token per timer tick
(``tick_us``; we charge the exact fraction ``ran / tick_us``); every ``interval`` ticks
``fill_rate`` tokens are added, and tokens above ``tokens_max`` spill. With the **hard** flag a
context whose bucket is empty (``tokens <= 0``) goes on hold until it has refilled to
``tokens_min`` (``vx_tokens_recalc``); the wake-up time is computed, so no polling happens.
Under contention a hard-limited context therefore gets ``fill_rate / interval`` of a CPU in the
long run, whatever its neighbours do.

**Idle-time skipping** (``CONFIG_VSERVER_IDLETIME``): when a core would go idle while contexts
are on hold, VServer advances their clock as if the idle time had passed (``vx_try_skip``):
contexts with ``vserver_idle_skip`` earn tokens at ``fill_rate_idle / interval_idle`` for the
skipped time, enough for the first of them to leave the hold queue at once. The hard limit thus
becomes work-conserving when nobody else wants the CPU.

Among contexts with tokens the 2.6 O(1) scheduler runs them round robin with a
``vserver_timeslice_us`` timeslice; an interactive task (one that slept, i.e. freshly woken
short work) preempts a CPU-bound one, as the O(1) sleep bonus lets it do. The priority mode
(``VXF_SCHED_PRIO``, bucket level as a priority bonus) is not modelled.

States of a context: *asleep*, *runnable*, *running*, *held* (hard limit, bucket empty).
Invariants: ``tokens <= tokens_max``; a held context does not run; it leaves the hold queue
only with ``tokens >= tokens_min``.
"""

from __future__ import annotations

import math
from typing import Any

from virtlab.sched.base import Node, Policy
from virtlab.sched.params import GuestSchedParams

__all__ = ["VServerPolicy", "VsContext"]


class VsContext(Node):
    """A VServer security context's scheduling state (see the module docstring)."""

    __slots__ = ("hard", "fill_rate", "interval_us", "tokens", "tokens_min", "tokens_max",
                 "last_fill_us", "held", "held_at", "idle_skip", "idle_tokens_per_us",
                 "holds", "held_us", "idle_skips", "idle_tokens")

    def __init__(self, name: str, policy: Policy, limit: float, sched: GuestSchedParams,
                 hz: int) -> None:
        super().__init__(name, policy, limit=limit)
        tick_us = 1e6 / hz
        self.hard = sched.vserver_hard
        self.fill_rate = float(sched.vserver_fill_rate)
        self.interval_us = sched.vserver_interval_ticks * tick_us
        tokens_min, tokens_max, tokens = sched.vserver_tokens(hz)
        self.tokens_min = float(tokens_min)
        self.tokens_max = float(tokens_max)
        self.tokens = float(tokens)  # vx_info_init_sched: a new context starts with HZ >> 2
        self.last_fill_us = 0.0
        self.held = False
        self.held_at = 0.0
        self.idle_skip = sched.vserver_idle_skip
        self.idle_tokens_per_us = (sched.vserver_fill_rate_idle
                                   / (sched.vserver_interval_idle_ticks * tick_us))
        self.holds = 0
        self.held_us = 0.0
        self.idle_skips = 0
        self.idle_tokens = 0.0


class VServerPolicy(Policy):
    """Token buckets per context, round robin among contexts with tokens."""

    name = "vserver"

    def _make(self, name: str, sched: GuestSchedParams, cpus: int, limit: float) -> Node:
        return VsContext(name, self, limit, sched, self.params.hz)

    @staticmethod
    def _refill(ctx: VsContext, now: float) -> None:
        """Add ``fill_rate`` per whole interval elapsed (the remainder is kept), clip at max."""
        intervals = math.floor((now - ctx.last_fill_us) / ctx.interval_us)
        if intervals > 0:
            ctx.tokens = min(ctx.tokens_max, ctx.tokens + intervals * ctx.fill_rate)
            ctx.last_fill_us += intervals * ctx.interval_us

    def _release(self, ctx: VsContext, now: float) -> None:
        ctx.held = False
        ctx.held_us += now - ctx.held_at
        self.trace(ctx, "sched", f"leaves the hold queue with {ctx.tokens:.1f} tokens")

    # Questions ---------------------------------------------------------------------------------
    def eligible(self, node: Node, now: float) -> bool:
        """Not while held; leave the hold queue with tokens_min tokens."""
        assert isinstance(node, VsContext)
        if not node.held:
            return True
        self._refill(node, now)
        if node.tokens >= node.tokens_min:
            self._release(node, now)
            return True
        return False

    def release_at_us(self, node: Node, now: float) -> float:
        """The refill that brings the bucket to tokens_min."""
        assert isinstance(node, VsContext)
        self._refill(node, now)
        intervals = max(1, math.ceil((node.tokens_min - node.tokens) / node.fill_rate))
        return node.last_fill_us + intervals * node.interval_us

    def quantum_us(self, node: Node, core: int, now: float) -> float:
        """The timeslice, or (hard limit) the time until the bucket is empty.

        While running, a context loses one token per tick and gains ``fill_rate`` at each
        interval boundary; the bucket is followed from refill to refill until it runs dry.
        """
        assert isinstance(node, VsContext)
        timeslice = self.params.vserver_timeslice_us
        if not node.hard:
            return timeslice
        self._refill(node, now)
        tick = self.params.tick_us
        tokens = node.tokens
        elapsed = 0.0
        to_refill = node.last_fill_us + node.interval_us - now
        while elapsed < timeslice:
            if tokens * tick <= to_refill:
                return min(timeslice, elapsed + max(tokens, 0.0) * tick)
            tokens = min(node.tokens_max, tokens - to_refill / tick + node.fill_rate)
            elapsed += to_refill
            to_refill = node.interval_us
        return timeslice

    def preempt_delay_us(self, waker: Node, running: Node, stint_us: float,
                         now: float) -> float | None:
        """Interactive (freshly woken) work preempts at once."""
        return 0.0  # the dispatcher asks only for freshly woken (interactive) work

    def on_idle(self, nodes: list[Node], now: float) -> bool:
        """Idle-time skipping: credit held contexts with the idle time until one is released."""
        skippers = [n for n in dict.fromkeys(nodes)
                    if isinstance(n, VsContext) and n.held and n.idle_skip]
        if not skippers:
            return False
        for ctx in skippers:
            self._refill(ctx, now)
        skip_us = min((ctx.tokens_min - ctx.tokens) / ctx.idle_tokens_per_us for ctx in skippers)
        skip_us = max(skip_us, 0.0)
        for ctx in skippers:
            earned = skip_us * ctx.idle_tokens_per_us
            ctx.tokens = min(ctx.tokens_max, ctx.tokens + earned)
            ctx.idle_tokens += earned
            ctx.idle_skips += 1
        self.trace(skippers[0], "sched", f"idle time skipped: {skip_us:.0f} µs credited")
        return True

    # Reports -----------------------------------------------------------------------------------
    def key(self, node: Node, head_seq: int, now: float) -> tuple[Any, ...]:
        """Round robin: first come, first served, re-queued at the back."""
        return (head_seq,)

    def stop(self, node: Node, core: int, ran_us: float, start_us: float, now: float) -> None:
        """Pay one token per tick run; hold a context whose bucket is empty."""
        assert isinstance(node, VsContext)
        if not node.hard:
            return
        # Refills during the stint happened while tokens were being consumed, so clip only
        # the balance at the end: bring the bucket to the stint's start, then add and take.
        self._refill(node, start_us)
        intervals = math.floor((now - node.last_fill_us) / node.interval_us)
        node.last_fill_us += intervals * node.interval_us
        node.tokens = min(node.tokens_max,
                          node.tokens + intervals * node.fill_rate - ran_us / self.params.tick_us)
        if node.tokens <= 1e-6 and not node.held:
            node.held = True
            node.held_at = now
            node.holds += 1
            self.trace(node, "sched", "bucket empty: on hold")

    def stats(self, node: Node) -> dict[str, float]:
        """Tokens and hold / idle-skip counters."""
        assert isinstance(node, VsContext)
        held_us = node.held_us
        if node.held and self.dispatcher is not None:
            held_us += self.dispatcher.env.now - node.held_at
        return {"tokens": node.tokens, "holds": float(node.holds), "held_us": held_us,
                "idle_skips": float(node.idle_skips), "idle_tokens": node.idle_tokens}

