"""A Xen-style credit scheduler for vCPUs (Xen ``common/sched_credit.c``, credit1).

Every accounting period (the timeslice, 30 ms) the scheduler hands out ``period x cores`` µs of
**credit** among the *active* domains in proportion to ``weight x active vCPUs``, at most one
timeslice per active vCPU and, with a cap, at most ``cap`` % of a timeslice. Running burns credit
one for one. A domain's **priority** is BOOST, UNDER or OVER; UNDER (credit >= 0) and OVER
(credit < 0) are set at each accounting (``csched_acct``) and hold until the next, so a domain
whose credit runs out mid-period stays UNDER until then. The runnable domain of best priority
runs, first come first served within a priority, for a whole timeslice unless preempted: the
tick (a third of a timeslice, ``csched_tick``) burns credit and ends a boost but does not
reschedule. A domain with more than a timeslice of credit per vCPU stops earning and halves its
credit (it is not using its share); credit below minus a timeslice is forgotten.

**BOOST**: a domain that wakes (work arrives while it had none) with credit left and not parked
gets BOOST priority and *tickles*: it preempts a running domain of lower priority, once that
has run for ``credit_ratelimit_us``. The boost ends when the domain is found running at a tick
(every third of a timeslice), i.e. as soon as it uses CPU for real, or at the next accounting,
which recomputes every priority from the credit. This is what lets an I/O
bound guest, or a driver domain's backend, run promptly beside CPU hogs; with
``credit_boost = false`` a woken domain waits its turn.

**Cap** (simplified): a capped domain may run ``cap`` % of one CPU per accounting period; when
that is used it is *parked* until the next period (Xen parks a vCPU when its credit falls below
minus its cap share, which lets it overshoot briefly).

States of a domain: *asleep*, *runnable*, *running*, *parked*. Invariants: a parked domain does
not run; a capped domain runs at most ``cap`` % x period per period (plus the tail of short
work already running when the budget ran out).
"""

from __future__ import annotations

import math
from typing import Any

from simpy.events import ProcessGenerator

from virtlab.sched.base import Node, Policy
from virtlab.sched.params import GuestSchedParams

__all__ = ["CreditPolicy", "Domain", "BOOST", "UNDER", "OVER", "PRIORITY_NAMES"]

BOOST, UNDER, OVER = 0, 1, 2
PRIORITY_NAMES = ("BOOST", "UNDER", "OVER")


class Domain(Node):
    """A Xen domain's scheduling state (see the module docstring)."""

    __slots__ = ("weight", "cap_pct", "vcpus", "credit_us", "pri", "boosted", "parked",
                 "parked_at", "used_period_us", "earning", "boosts", "parks", "parked_us")

    def __init__(self, name: str, policy: Policy, limit: float, weight: int, cap_pct: int,
                 vcpus: int) -> None:
        super().__init__(name, policy, limit=limit)
        self.weight = weight
        self.cap_pct = cap_pct
        self.vcpus = vcpus
        self.credit_us = 0.0
        self.pri = UNDER  # UNDER or OVER, as csched_acct last set it
        self.boosted = False
        self.parked = False
        self.parked_at = 0.0
        self.used_period_us = 0.0
        self.earning = False
        self.boosts = 0
        self.parks = 0
        self.parked_us = 0.0

    @property
    def priority(self) -> int:
        """BOOST, or UNDER / OVER as the last accounting set it (not the credit of now)."""
        return BOOST if self.boosted else self.pri


class CreditPolicy(Policy):
    """Credit-based proportional share with boost, caps and a context-switch rate limit."""

    name = "credit"

    def __init__(self, params: Any, cores: int) -> None:
        super().__init__(params, cores)
        self.tslice_us = params.credit_tslice_us
        self.tick_us = self.tslice_us / 3.0  # CSCHED_TICKS_PER_TSLICE
        # Running stints: core -> (domain, time up to which the stint has been charged).
        self._burning: dict[int, tuple[Domain, float]] = {}

    def _make(self, name: str, sched: GuestSchedParams, cpus: int, limit: float) -> Node:
        return Domain(name, self, limit, sched.credit_weight, sched.credit_cap_pct, cpus)

    def new_domain(self, name: str, *, weight: int, vcpus: int, limit: float) -> Domain:
        """A domain with an explicit weight (dom0)."""
        node = Domain(name, self, limit, weight, 0, vcpus)
        self.nodes.append(node)
        return node

    def attach(self, dispatcher: Any) -> None:
        """Start the accounting timer too."""
        super().attach(dispatcher)
        dispatcher.env.process(self._run_accounting())

    def _cap_budget_us(self, dom: Domain) -> float:
        return dom.cap_pct / 100.0 * self.tslice_us

    def _run_accounting(self) -> ProcessGenerator:
        """csched_acct: every period, share out credit, recompute who earns, lift caps."""
        dispatcher = self.dispatcher
        assert dispatcher is not None
        env = dispatcher.env
        while True:
            yield env.timeout(self.tslice_us)
            now = env.now
            for core, (dom, mark) in list(self._burning.items()):
                self._burn(dom, now - mark)  # burn_credits for the running vCPUs
                self._burning[core] = (dom, now)
            domains: list[Domain] = self.nodes  # type: ignore[assignment]
            earners = [d for d in domains if d.earning or d.active > 0]
            active_vcpus = {d: max(1, min(d.vcpus, d.peak_active)) for d in earners}
            for dom, credit in self._fair_shares(earners, active_vcpus).items():
                vcpus = active_vcpus[dom]
                dom.credit_us += credit
                dom.earning = True
                dom.boosted = False  # csched_acct recomputes every earner's priority
                if dom.credit_us < -self.tslice_us * vcpus:
                    dom.credit_us = -self.tslice_us * vcpus  # lower bound on credit
                elif dom.credit_us > self.tslice_us * vcpus:
                    dom.earning = False  # not using its share: stop earning, keep half
                    dom.credit_us /= 2.0
                dom.pri = UNDER if dom.credit_us >= 0.0 else OVER
            for dom in domains:
                dom.used_period_us = 0.0
                dom.peak_active = dom.active
                if dom.parked:
                    dom.parked = False
                    dom.parked_us += now - dom.parked_at
                    self.trace(dom, "sched", "unparked: new accounting period")
            dispatcher.reschedule()

    def _fair_shares(self, earners: list[Domain], vcpus: dict[Domain, int]
                     ) -> dict[Domain, float]:
        """Credit of one period by ``weight x active vCPUs``, at most each domain's peak.

        What a domain cannot use (more than a timeslice per active vCPU, or its cap) goes to
        the others in proportion to their weights, as csched_acct's "give other domains a
        chance at unused credits" does.
        """
        shares: dict[Domain, float] = {}
        left = list(earners)
        total = self.tslice_us * self.cores
        while left:
            weight_total = sum(d.weight * vcpus[d] for d in left)
            capped = []
            for dom in left:
                peak = vcpus[dom] * self.tslice_us
                if dom.cap_pct:
                    peak = min(peak, self._cap_budget_us(dom))
                if total * dom.weight * vcpus[dom] / weight_total >= peak:
                    capped.append((dom, peak))
            if not capped:
                for dom in left:
                    shares[dom] = total * dom.weight * vcpus[dom] / weight_total
                break
            for dom, peak in capped:
                shares[dom] = peak
                total -= peak
                left.remove(dom)
        return shares

    # Questions ---------------------------------------------------------------------------------
    def eligible(self, node: Node, now: float) -> bool:
        """Not while parked by a cap."""
        return not node.parked  # type: ignore[attr-defined]

    def key(self, node: Node, head_seq: int, now: float) -> tuple[Any, ...]:
        """BOOST, then UNDER, then OVER; first come, first served within a priority."""
        return (node.priority, head_seq)  # type: ignore[attr-defined]

    def quantum_us(self, node: Node, core: int, now: float) -> float:
        """A whole timeslice (csched_schedule), or what is left of a capped domain's budget.

        The 10 ms tick only accounts, it does not reschedule; a capped domain stops when its
        budget is used.
        """
        assert isinstance(node, Domain)
        quantum = self.tslice_us
        if node.cap_pct:
            quantum = min(quantum, self._cap_budget_us(node) - node.used_period_us)
        return quantum

    def preempt_delay_us(self, waker: Node, running: Node, stint_us: float,
                         now: float) -> float | None:
        """Tickle: a waker of better priority preempts once the runner has run the rate limit.

        The runner's priority is taken as of now: its credit less the running stint, and its
        boost gone if a tick has passed since the stint began. If only the boost stands in the
        way, the answer is "at the next tick".
        """
        assert isinstance(waker, Domain) and isinstance(running, Domain)
        ratelimit_delay = max(0.0, self.params.credit_ratelimit_us - stint_us)
        start = now - stint_us
        unboosted = running.pri
        boost_ended = math.floor(now / self.tick_us) > math.floor(start / self.tick_us)
        current = BOOST if running.boosted and not boost_ended else unboosted
        if waker.priority < current:
            return ratelimit_delay
        if current == BOOST and waker.priority < unboosted:
            next_tick = (math.floor(now / self.tick_us) + 1) * self.tick_us
            return max(next_tick - now, ratelimit_delay)
        return None

    # Reports -----------------------------------------------------------------------------------
    def on_wake(self, node: Node, now: float) -> None:
        """A domain that wakes with credit left (and not parked) is boosted."""
        assert isinstance(node, Domain)
        node.earning = True
        if (self.params.credit_boost and not node.parked and not node.boosted
                and node.pri == UNDER):
            node.boosted = True
            node.boosts += 1

    def start(self, node: Node, core: int, now: float) -> None:
        """Remember where the stint's credit burning starts."""
        assert isinstance(node, Domain)
        self._burning[core] = (node, now)

    @staticmethod
    def _burn(dom: Domain, ran_us: float) -> None:
        dom.credit_us -= ran_us
        dom.used_period_us += ran_us

    def stop(self, node: Node, core: int, ran_us: float, start_us: float, now: float) -> None:
        """Burn credit; end the boost at a tick; park a capped domain whose budget is used."""
        assert isinstance(node, Domain)
        _dom, mark = self._burning.pop(core)
        self._burn(node, now - mark)
        if node.boosted and math.floor(now / self.tick_us) > math.floor(start_us / self.tick_us):
            node.boosted = False  # found running at a tick: it uses CPU for real
        if node.cap_pct and not node.parked and (
                node.used_period_us >= self._cap_budget_us(node) - 1e-9):
            node.parked = True
            node.parked_at = now
            node.parks += 1
            self.trace(node, "sched", f"parked: cap {node.cap_pct} % used")

    def stats(self, node: Node) -> dict[str, float]:
        """Weight, credit, priority and boost/park counters."""
        assert isinstance(node, Domain)
        return {"weight": float(node.weight), "credit_us": node.credit_us,
                "priority": float(node.priority), "boosts": float(node.boosts),
                "parks": float(node.parks), "parked_us": node.parked_us}
