"""The semaphore's interrupt-priority lane, and the idle time it records.

Deterministic mechanism tests: processes acquire a one-unit semaphore at fixed times and hold it
for fixed durations, and the exact order and times at which each got the unit are checked. A
priority acquirer (interrupt work) overtakes every ordinary waiter, but never a holder; priority
acquirers are served among themselves in arrival order.
"""

from __future__ import annotations

import pytest
import simpy

from virtlab import GuestSpec, RequestResponse, Scenario, run
from virtlab.cpu import Cpu, ExecContext, Semaphore
from virtlab.records import GUEST, Request
from virtlab.sched.params import SchedulerParams


def _user(env, sem, log, name, at_us, hold_us, *, priority=False):
    """A process that asks for a unit at ``at_us``, logs when it got it, holds it ``hold_us``."""
    def proc():
        yield env.timeout(at_us)
        wait = sem.acquire(priority=True) if priority else sem.acquire()
        if wait is not None:
            yield wait
        log.append((name, env.now))
        yield env.timeout(hold_us)
        sem.release()

    env.process(proc())


def test_a_priority_acquirer_overtakes_earlier_waiters_but_not_the_holder():
    env, log = simpy.Environment(), []
    sem = Semaphore(env, "vcpu", 1)
    _user(env, sem, log, "holder", 0.0, 10.0)
    _user(env, sem, log, "a", 1.0, 1.0)
    _user(env, sem, log, "b", 2.0, 1.0)
    _user(env, sem, log, "irq", 3.0, 1.0, priority=True)
    env.run()
    # The holder keeps the unit until it releases it at 10; the interrupt goes next.
    assert log == [("holder", 0.0), ("irq", 10.0), ("a", 11.0), ("b", 12.0)]


def test_priority_acquirers_are_served_in_arrival_order():
    env, log = simpy.Environment(), []
    sem = Semaphore(env, "vcpu", 1)
    _user(env, sem, log, "holder", 0.0, 10.0)
    _user(env, sem, log, "a", 1.0, 1.0)
    _user(env, sem, log, "irq1", 2.0, 1.0, priority=True)
    _user(env, sem, log, "b", 3.0, 1.0)
    _user(env, sem, log, "irq2", 4.0, 1.0, priority=True)
    env.run()
    assert log == [("holder", 0.0), ("irq1", 10.0), ("irq2", 11.0), ("a", 12.0), ("b", 13.0)]


def test_a_priority_acquirer_that_finds_a_free_unit_takes_it_at_once():
    env = simpy.Environment()
    sem = Semaphore(env, "vcpus", 2)
    assert sem.acquire() is None
    assert sem.acquire(priority=True) is None
    assert (sem.in_use, sem.waiting, sem.max_in_use) == (2, 0, 2)


def test_a_priority_waiter_arriving_after_an_ordinary_one_is_handed_the_next_unit():
    env = simpy.Environment()
    sem = Semaphore(env, "vcpu", 1)
    assert sem.acquire() is None
    ordinary = sem.acquire()
    first = sem.acquire(priority=True)
    assert ordinary is not None and first is not None and sem.waiting == 2
    sem.release()
    env.run()
    assert first.triggered and not ordinary.triggered and sem.in_use == 1
    sem.release()
    env.run()
    assert ordinary.triggered and sem.waiting == 0


def test_idle_since_is_when_the_last_unit_came_back_not_a_hand_over():
    env, log = simpy.Environment(), []
    sem = Semaphore(env, "vcpus", 2)
    assert sem.idle_since_us == 0.0
    _user(env, sem, log, "a", 1.0, 4.0)     # 1 .. 5
    _user(env, sem, log, "b", 2.0, 1.0)     # 2 .. 3: "a" still holds a unit
    env.run()
    assert sem.idle_since_us == 5.0
    env2, log2 = simpy.Environment(), []
    one = Semaphore(env2, "vcpu", 1)
    _user(env2, one, log2, "a", 0.0, 2.0)   # hands its unit straight to "b" at 2
    _user(env2, one, log2, "b", 1.0, 3.0)   # 2 .. 5
    env2.run()
    assert log2 == [("a", 0.0), ("b", 2.0)] and one.idle_since_us == 5.0


def test_an_exec_context_keeps_the_priority_lane_when_cpu_runs_work_in_it():
    """Cpu.run takes the context first (FIFO), then a core; a unit taken at priority beforehand
    (as the emulated path does for interrupt work) is held across the run."""
    env, log = simpy.Environment(), []
    cpu = Cpu(env, 4)
    vcpu = ExecContext(env, "vm.vcpu", 1, role="vcpu")
    req = Request(0, "vm", "w", "emulated", "rr", 0, 0.0)

    def app(name, at_us):
        yield env.timeout(at_us)
        yield from cpu.run(vcpu, req, ((GUEST, 5.0, name),))
        log.append((name, env.now))

    def interrupt(at_us):
        yield env.timeout(at_us)
        wait = vcpu.acquire(priority=True)
        if wait is not None:
            yield wait
        yield from cpu.run(None, req, ((GUEST, 1.0, "irq"),))
        vcpu.release()
        log.append(("irq", env.now))

    env.process(app("app1", 0.0))
    env.process(app("app2", 1.0))
    env.process(interrupt(2.0))
    env.run()
    assert log == [("app1", 5.0), ("irq", 6.0), ("app2", 11.0)]


@pytest.mark.parametrize(("host", "vcpu"), [("cfs", "host"), ("vserver", "host"),
                                           ("openvz", "host"), ("fifo", "credit"),
                                           ("cfs", "credit")])
def test_an_isolated_emulated_transaction_costs_the_same_under_every_scheduler(host, vcpu):
    """The schedulers replace the core pool, not the contexts: with nothing to contend with,
    interrupt work taken at priority runs exactly as under the FIFO pool."""
    def one(scheduler):
        scenario = Scenario(scheduler=scheduler, guests=(GuestSpec(
            name="g", approach="emulated", vcpus=1, workloads=(RequestResponse(),)),))
        (record,) = run(scenario, seed=0, max_requests=1, records=True).records
        return record

    fifo = one(SchedulerParams())
    other = one(SchedulerParams(host=host, vcpu=vcpu))
    assert other.latency_us == pytest.approx(fifo.latency_us, abs=1e-9)
    assert other.exits == fifo.exits
