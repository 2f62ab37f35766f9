"""The split virtqueue against its definition and against a plain reference model.

The stateful test drives a driver and a device through random interleavings of every ring
operation, starting the 16-bit indexes near 65535 so that they wrap during the run, and
compares the queue with deques that say what must happen: chains are popped in the order they
were added, each chain is used exactly once, the driver gets them back in used-ring order, no
descriptor is lost or duplicated, and no notification is lost.
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from virtlab.paths.virtqueue import (
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    SplitVirtqueue,
    vring_need_event,
)

U16 = 0xFFFF
index16 = st.one_of(st.integers(0, U16), st.integers(U16 - 70, U16), st.integers(0, 70))


def crossed(event_idx: int, new_idx: int, old: int) -> bool:
    """The definition: event_idx is one of old, old+1, ..., new_idx-1 (mod 2**16)."""
    steps = (new_idx - old) & U16
    return any(((old + k) & U16) == event_idx for k in range(steps))


@given(event=index16, old=index16, delta=st.integers(0, 300))
def test_vring_need_event_is_event_in_old_new_window(event, old, delta):
    """vring_need_event is true exactly when event_idx lies in [old, new) modulo 2**16."""
    new = (old + delta) & U16
    assert vring_need_event(event, new, old) == crossed(event, new, old)


@given(old=index16, delta=st.integers(1, 300))
def test_vring_need_event_fires_once_per_window_across_the_wrap(old, delta):
    """Of consecutive windows covering [old, old + delta), exactly one contains each event."""
    event = (old + delta - 1) & U16
    hits = [vring_need_event(event, (old + k + 1) & U16, (old + k) & U16) for k in range(delta)]
    assert hits.count(True) == 1 and hits[-1]


def test_vring_need_event_examples():
    """Worked examples, including the wrap from 65535 to 0."""
    assert vring_need_event(5, 6, 5)          # the other side asked for index 5
    assert not vring_need_event(5, 5, 4)      # not reached yet
    assert not vring_need_event(5, 7, 6)      # already passed
    assert vring_need_event(65535, 1, 65534)  # window 65534, 65535, wrapping to 0
    assert vring_need_event(0, 2, 65535)
    assert not vring_need_event(3, 2, 65535)


def test_queue_size_must_be_a_power_of_two_up_to_32768():
    """Sizes that are not a power of two, or larger than 32768, are rejected."""
    for size in (0, 3, 100, 65536):
        with pytest.raises(ValueError, match="power of two"):
            SplitVirtqueue(size)
    assert SplitVirtqueue(32768).size == 32768


def test_block_request_is_a_three_descriptor_chain():
    """A block read is header (readable) + data (writable) + status (writable), linked by NEXT."""
    vq = SplitVirtqueue(8, indirect=False)
    head = vq.add([16], [4096, 1], token="read")
    assert vq.num_free == 5
    second = vq.desc_next[head]
    third = vq.desc_next[second]
    assert [vq.desc_flags[i] for i in (head, second, third)] == [
        VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_WRITE]
    chain = vq.pop()
    assert chain.elements == ((16, False), (4096, True), (1, True))
    assert (chain.readable_bytes, chain.writable_bytes) == (16, 4097)
    vq.add_used(chain.head, 4097)
    vq.flush_used()
    assert vq.get_buf() == ("read", 4097)
    assert vq.num_free == 8


def test_indirect_chain_takes_one_descriptor():
    """With indirect descriptors the three-element chain takes one table entry."""
    vq = SplitVirtqueue(4, indirect=True)
    head = vq.add([16], [4096, 1], token="read")
    assert vq.num_free == 3
    assert vq.desc_flags[head] == VIRTQ_DESC_F_INDIRECT and vq.desc_len[head] == 48
    assert vq.pop().indirect


def test_full_ring_refuses_and_recovers():
    """A full ring refuses new chains (back-pressure) until the driver reclaims one."""
    vq = SplitVirtqueue(2, indirect=False)
    assert vq.add([10], [], 1) is not None and vq.add([10], [], 2) is not None
    assert vq.add([10], [], 3) is None
    vq.add_used(vq.pop().head, 0)
    vq.flush_used()
    assert vq.get_buf() == (1, 0)
    assert vq.add([10], [], 3) is not None


def test_event_idx_burst_against_a_busy_device_costs_one_kick():
    """With event index, a device that is busy sees one kick however many bursts arrive."""
    vq = SplitVirtqueue(256, start_index=65533)
    kicks = 0
    for burst in range(10):
        for k in range(3):
            vq.add([100], [], (burst, k))
        kicks += vq.kick_prepare()
        vq.disable_notify()            # the device runs and leaves notifications off
        while vq.pop() is not None:
            pass
    assert kicks == 1
    assert vq.enable_notify() is False  # device goes idle: the next burst kicks again
    vq.add([100], [], "next")
    assert vq.kick_prepare()


def test_flags_kick_until_the_device_disables_notification():
    """With flag hints, every burst kicks until the device has set NO_NOTIFY."""
    vq = SplitVirtqueue(256, event_idx=False)
    vq.add([1], [], 1)
    assert vq.kick_prepare()
    vq.add([1], [], 2)
    assert vq.kick_prepare()          # device has not run yet: a second (useless) kick
    vq.disable_notify()
    vq.add([1], [], 3)
    assert not vq.kick_prepare()


def test_delayed_interrupt_after_three_quarters():
    """enable_cb_delayed asks for an interrupt after 3/4 of the outstanding buffers."""
    vq = SplitVirtqueue(16)
    for k in range(8):
        vq.add([1], [], k)
    vq.disable_cb()
    assert vq.enable_cb_delayed()
    interrupts = []
    for _ in range(8):
        vq.add_used(vq.pop().head, 0)
        vq.flush_used()
        interrupts.append(vq.need_interrupt())
    # used_event = 0 + 6: the interrupt comes when the 7th buffer is used.
    assert interrupts == [False] * 6 + [True, False]


class VirtqueueMachine(RuleBasedStateMachine):
    """A driver and a device acting in random order on one queue, checked step by step."""

    @initialize(size=st.sampled_from([1, 2, 4, 8, 16]), below_wrap=st.integers(0, 12),
                event_idx=st.booleans(), indirect=st.booleans())
    def setup(self, size, below_wrap, event_idx, indirect):
        start = (U16 - below_wrap) & U16
        self.vq = SplitVirtqueue(size, event_idx=event_idx, indirect=indirect,
                                 start_index=start)
        self.start = start
        self.next_token = 0
        self.avail_ref: deque = deque()        # added, not yet popped (FIFO)
        self.in_flight_ref: dict[int, tuple] = {}  # head -> (token, elements)
        self.unflushed_ref: deque = deque()    # used, index not yet published
        self.used_ref: deque = deque()         # published, not yet reclaimed (FIFO)
        self.descs_of: dict = {}               # token -> descriptors it holds
        self.added = self.flushed = self.reclaimed = 0
        self.added_since_kick = 0
        self.device_asleep = True              # enable_notify found nothing (initial state)
        self.kicks_while_asleep = 0
        self.driver_asleep = True              # enable_cb found nothing (initial state)
        # Where the driver asked for its next interrupt, by Linux's rules (event index).
        self.used_event_ref = start
        self.callbacks_ref = True

    def _needed(self, elements):
        return 1 if (self.vq.indirect and elements > 1) else elements

    # Driver -----------------------------------------------------------------------------------
    @rule(n_out=st.integers(1, 3), n_in=st.integers(0, 2))
    def add(self, n_out, n_in):
        assume(self.vq.num_added < U16)
        if not self.vq.indirect:
            assume(n_out + n_in <= self.vq.size)
        token = self.next_token
        self.next_token += 1
        outs = [100 + k for k in range(n_out)]
        ins = [200 + k for k in range(n_in)]
        free_before = self.vq.num_free
        head = self.vq.add(outs, ins, token)
        needed = self._needed(n_out + n_in)
        if free_before < needed:
            assert head is None, "a chain was added without free descriptors"
            return
        assert head is not None, "free descriptors were available but the add failed"
        elements = tuple((n, False) for n in outs) + tuple((n, True) for n in ins)
        self.avail_ref.append((token, elements))
        self.descs_of[token] = needed
        self.added += 1
        self.added_since_kick += 1

    @rule()
    def kick_prepare(self):
        vq = self.vq
        new = vq.avail_idx
        old = (new - self.added_since_kick) & U16
        if vq.event_idx:
            expected = vring_need_event(vq.avail_event, new, old)
        else:
            expected = old != new and not vq.used_flags & 1
        kick = vq.kick_prepare()
        assert kick == expected
        if kick and self.device_asleep:
            self.kicks_while_asleep += 1
            if vq.event_idx:
                assert self.kicks_while_asleep == 1, "event index kicked twice in one sleep"
        if self.device_asleep and self.avail_ref:
            # Chains wait for a sleeping device at the end of a burst: it must have been told.
            assert self.kicks_while_asleep >= 1, "a sleeping device was never kicked: lost wakeup"
        self.added_since_kick = 0

    @rule()
    def get_buf(self):
        got = self.vq.get_buf()
        if not self.used_ref:
            assert got is None
            return
        token, written = self.used_ref.popleft()
        assert got == (token, written), "reclaimed out of used-ring order"
        del self.descs_of[token]
        self.reclaimed += 1
        last_used = (self.start + self.reclaimed) & U16
        # virtqueue_get_buf: with callbacks on, ask for an interrupt on the very next entry.
        self.used_event_ref = last_used if self.callbacks_ref else (last_used + 0x8000) & U16

    @rule()
    def disable_cb(self):
        self.vq.disable_cb()
        self.driver_asleep = False
        self.callbacks_ref = False
        self.used_event_ref = (self.start + self.reclaimed + 0x8000) & U16

    @rule(delayed=st.booleans())
    def enable_cb(self, delayed):
        empty = self.vq.enable_cb_delayed() if delayed else self.vq.enable_cb()
        self.callbacks_ref = True
        last_used = (self.start + self.reclaimed) & U16
        outstanding = self.added - self.reclaimed
        if delayed and self.vq.event_idx:
            self.used_event_ref = (last_used + int(outstanding * 0.75)) & U16
        else:
            self.used_event_ref = last_used
        if delayed:
            self.driver_asleep = False   # it asked to hear only after 3/4 of the outstanding
        else:
            assert empty == (not self.used_ref)
            self.driver_asleep = empty

    # Device -----------------------------------------------------------------------------------
    @rule()
    def pop(self):
        chain = self.vq.pop()
        if not self.avail_ref:
            assert chain is None
            return
        token, elements = self.avail_ref.popleft()
        assert chain is not None and self.vq.token_of(chain.head) == token, "popped out of order"
        assert chain.elements == elements
        assert chain.head not in self.in_flight_ref, "one descriptor in flight twice"
        self.in_flight_ref[chain.head] = (token, elements)
        self.device_asleep = False

    @precondition(lambda self: self.in_flight_ref)
    @rule(data=st.data())
    def add_used(self, data):
        head = data.draw(st.sampled_from(sorted(self.in_flight_ref)))
        token, elements = self.in_flight_ref.pop(head)
        written = sum(n for n, w in elements if w)
        self.vq.add_used(head, written)
        self.unflushed_ref.append((token, written))

    @rule()
    def flush_and_signal(self):
        count = self.vq.flush_used()
        assert count == len(self.unflushed_ref)
        self.used_ref.extend(self.unflushed_ref)
        self.flushed += count
        self.unflushed_ref.clear()
        vq = self.vq
        old = vq.signalled_used
        new = vq.used_idx
        if vq.event_idx:
            assert vq.used_event == self.used_event_ref
            expected = old != new and crossed(self.used_event_ref, new, old)
        else:
            expected = old != new and not vq.avail_flags & 1
        interrupt = vq.need_interrupt()
        assert interrupt == expected
        if self.driver_asleep and count:
            assert interrupt, "the driver sleeps and buffers were used, but no interrupt"
        if interrupt:
            self.driver_asleep = False

    @rule()
    def disable_notify(self):
        self.vq.disable_notify()
        self.device_asleep = False

    @rule()
    def enable_notify(self):
        more = self.vq.enable_notify()
        assert more == bool(self.avail_ref)
        # Finding work, the device stays awake (disables notifications and goes on).
        self.device_asleep = not more
        if not more:
            self.kicks_while_asleep = 0

    # Invariants -------------------------------------------------------------------------------
    @invariant()
    def structure_is_consistent(self):
        self.vq.check()

    @invariant()
    def indexes_count_operations_mod_2_16(self):
        vq = self.vq
        assert vq.avail_idx == (self.start + self.added) & U16
        assert vq.used_idx == (self.start + self.flushed) & U16
        assert vq.last_used_idx == (self.start + self.reclaimed) & U16
        assert vq.outstanding <= vq.size

    @invariant()
    def no_descriptor_lost_or_duplicated(self):
        held = sum(self.descs_of.values())
        assert self.vq.num_free + held == self.vq.size
        states = self.vq.state_counts()
        assert states["available"] == sum(self.descs_of[t] for t, _ in self.avail_ref)
        assert states["in_flight"] == sum(self.descs_of[t] for t, _ in
                                          self.in_flight_ref.values())


VirtqueueMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60,
                                              deadline=None)
TestVirtqueueStateful = VirtqueueMachine.TestCase
