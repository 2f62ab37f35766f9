"""Xen's shared ring, event channels and grant tables against their definitions.

The stateful test drives a frontend and a backend in random interleavings, with every index
starting just below 2**32 so that ``RING_IDX`` wraps during the run, and compares the ring with
plain deques: requests reach the backend in the order they were produced, each exactly once;
responses reach the frontend in the order they were pushed; at most ``size`` requests are ever
outstanding; and a side that went idle through the final check is always notified of new work.
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from virtlab.paths.xenring import (
    RING_IDX_MASK,
    BlkfrontGrantPool,
    EventChannel,
    GrantTable,
    PersistentGrantTree,
    XenSharedRing,
)

M = RING_IDX_MASK


def event_in_window(event: int, new: int, old: int) -> bool:
    """The definition of the hold-off: ``event`` is one of old+1, ..., new (mod 2**32)."""
    return any(((old + k) & M) == event for k in range(1, ((new - old) & M) + 1))


@given(old=st.one_of(st.integers(0, M), st.integers(M - 50, M)), delta=st.integers(0, 200),
       offset=st.integers(-5, 205))
def test_push_notifies_iff_event_was_crossed(old, delta, offset):
    """RING_PUSH_*_AND_CHECK_NOTIFY notifies iff *_event lies in (old, new], across the wrap."""
    ring = XenSharedRing(256, start_index=old)
    event = (old + offset) & M
    ring.req_event = event
    for k in range(delta):
        ring.put_request(k)
    assert ring.push_requests_and_check_notify() == event_in_window(event, (old + delta) & M, old)


def test_ring_sizes_are_powers_of_two():
    """A ring page holds a power-of-two number of entries."""
    with pytest.raises(ValueError):
        XenSharedRing(33)
    assert XenSharedRing(32).size == 32


def test_final_check_asks_for_the_very_next_entry():
    """After the final check finds nothing, the next push notifies; later pushes do not."""
    ring = XenSharedRing(4, start_index=M - 1)
    assert not ring.final_check_for_requests()
    ring.put_request("a")
    assert ring.push_requests_and_check_notify()          # crossed req_event = req_cons + 1
    ring.get_request()
    ring.put_request("b")
    assert not ring.push_requests_and_check_notify()      # the backend is still working
    assert ring.final_check_for_requests()                # ... and finds "b" before sleeping


def test_full_ring_refuses_requests():
    """RING_FULL: the frontend must wait for responses; nothing is overwritten."""
    ring = XenSharedRing(2)
    ring.put_request(1)
    ring.put_request(2)
    assert ring.full()
    with pytest.raises(RuntimeError):
        ring.put_request(3)


def test_event_channel_coalesces_while_pending():
    """Sends while the event is pending raise no further upcall (2-level ABI)."""
    chan = EventChannel("x")
    assert chan.send() and not chan.send()
    chan.clear()
    assert chan.send()
    assert (chan.sends, chan.upcalls) == (3, 2)
    chan.clear()
    chan.masked = True
    assert not chan.send()
    assert chan.unmask()


def test_grant_cannot_be_ended_while_mapped():
    """A mapped grant stays granted until the backend unmaps it."""
    table = GrantTable(max_grants=2)
    ref = table.grant()
    table.map(ref)
    assert not table.end_access(ref)
    table.unmap(ref)
    assert table.end_access(ref)
    assert table.grant() is not None and table.grant() is not None and table.grant() is None


class XenRingMachine(RuleBasedStateMachine):
    """A frontend and a backend acting in random order on one ring."""

    @initialize(size=st.sampled_from([1, 2, 4, 8, 32]), below_wrap=st.integers(0, 12))
    def setup(self, size, below_wrap):
        self.start = (M - below_wrap) & M
        self.ring = XenSharedRing(size, start_index=self.start)
        self.next_id = 0
        self.produced: deque = deque()   # written, not yet pushed
        self.pushed: deque = deque()     # visible to the backend, not consumed (FIFO)
        self.in_service: list = []       # consumed by the backend, not yet answered
        self.answered: deque = deque()   # responses written, not pushed
        self.responses: deque = deque()  # responses visible to the frontend (FIFO)
        self.backend_idle = False        # its final check found nothing
        self.frontend_idle = False
        self.counts = {"produced": 0, "pushed": 0, "consumed": 0, "answered": 0, "rsp_pushed": 0,
                       "rsp_consumed": 0}

    # Frontend ----------------------------------------------------------------------------------
    @rule()
    def put_request(self):
        outstanding = len(self.produced) + len(self.pushed) + len(self.in_service) + len(
            self.answered) + len(self.responses)
        if outstanding >= self.ring.size:
            assert self.ring.full()
            with pytest.raises(RuntimeError):
                self.ring.put_request("x")
            return
        assert self.ring.free_requests() == self.ring.size - outstanding
        self.ring.put_request(self.next_id)
        self.produced.append(self.next_id)
        self.next_id += 1
        self.counts["produced"] += 1

    @rule()
    def push_requests(self):
        notify = self.ring.push_requests_and_check_notify()
        if self.backend_idle and self.produced:
            assert notify, "the backend went idle and new requests arrived, but no event"
            self.backend_idle = False
        self.counts["pushed"] += len(self.produced)
        self.pushed.extend(self.produced)
        self.produced.clear()

    @rule()
    def get_response(self):
        if not self.responses:
            assert self.ring.unconsumed_responses() == 0
            return
        assert self.ring.get_response() == self.responses.popleft(), "response out of order"
        self.counts["rsp_consumed"] += 1

    @rule()
    def frontend_final_check(self):
        more = self.ring.final_check_for_responses()
        assert more == bool(self.responses)
        self.frontend_idle = not more

    # Backend -----------------------------------------------------------------------------------
    @rule()
    def get_request(self):
        if not self.pushed:
            assert self.ring.unconsumed_requests() == 0
            return
        got = self.ring.get_request()
        assert got == self.pushed.popleft(), "request consumed out of order"
        assert got not in self.in_service, "request consumed twice"
        self.in_service.append(got)
        self.counts["consumed"] += 1

    @precondition(lambda self: self.in_service)
    @rule(data=st.data())
    def put_response(self, data):
        # The backend may answer consumed requests in any order (block I/O completes so).
        rid = data.draw(st.sampled_from(self.in_service))
        self.in_service.remove(rid)
        self.ring.put_response(("rsp", rid))
        self.answered.append(("rsp", rid))
        self.counts["answered"] += 1

    @rule()
    def push_responses(self):
        notify = self.ring.push_responses_and_check_notify()
        if self.frontend_idle and self.answered:
            assert notify, "the frontend went idle and responses arrived, but no event"
            self.frontend_idle = False
        self.counts["rsp_pushed"] += len(self.answered)
        self.responses.extend(self.answered)
        self.answered.clear()

    @rule()
    def backend_final_check(self):
        more = self.ring.final_check_for_requests()
        assert more == bool(self.pushed)
        self.backend_idle = not more

    # Invariants --------------------------------------------------------------------------------
    @invariant()
    def indexes_count_operations_mod_2_32(self):
        r, c, s = self.ring, self.counts, self.start
        assert r.req_prod_pvt == (s + c["produced"]) & M
        assert r.req_prod == (s + c["pushed"]) & M
        assert r.req_cons == (s + c["consumed"]) & M
        assert r.rsp_prod_pvt == (s + c["answered"]) & M
        assert r.rsp_prod == (s + c["rsp_pushed"]) & M
        assert r.rsp_cons == (s + c["rsp_consumed"]) & M

    @invariant()
    def order_and_bound_hold(self):
        self.ring.check()

    @invariant()
    def nothing_lost_or_duplicated(self):
        ids = (list(self.produced) + list(self.pushed) + self.in_service
               + [rid for _, rid in self.answered] + [rid for _, rid in self.responses])
        assert len(ids) == len(set(ids))
        finished = self.counts["rsp_consumed"]
        assert len(ids) + finished == self.next_id


XenRingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60,
                                            deadline=None)
TestXenRingStateful = XenRingMachine.TestCase


# blkfront's persistent-grant pool and blkback's tree of kept grants (S140, S141) ---------------

def test_blkback_keeps_at_most_its_limit():
    """The tree keeps references until it holds ``limit``; later ones are refused (transient)."""
    tree = PersistentGrantTree(2)
    assert [tree.keep(ref) for ref in (7, 8, 9)] == [True, True, False]
    assert (tree.lookup(7), tree.lookup(9)) == (True, False)
    assert (len(tree), tree.hits, tree.misses) == (2, 1, 1)
    with pytest.raises(KeyError):
        tree.keep(7)


def test_blkfront_reuses_kept_grants_first_and_revokes_the_others():
    """A reference the backend still maps goes back to the head of the list; an unmapped one
    is revoked and its empty entry goes to the tail (blkif_completion)."""
    grants = GrantTable()
    pool = BlkfrontGrantPool(grants)
    kept, dropped = pool.get(), pool.get()
    grants.map(kept)
    grants.map(dropped)
    grants.unmap(dropped)
    assert pool.put(dropped) is False and dropped not in grants.granted
    assert pool.put(kept) is True and kept in grants.granted
    assert pool.get() == kept                     # the head: reused, no new grant
    fresh = pool.get()                            # the empty entry: a newly granted reference
    assert fresh != kept and fresh in grants.granted
    assert (pool.reused, pool.granted) == (1, 3)


class PersistentGrantMachine(RuleBasedStateMachine):
    """blkfront and blkback with persistent grants over random I/O sizes and completion orders.

    A model of the protocol: every outstanding request holds distinct granted references; the
    backend maps a reference unless it keeps it, keeps it if there is room, and unmaps the
    others at completion; the frontend then pools what is still mapped and revokes the rest.
    Invariants: the backend never keeps more than its limit; everything kept stays mapped
    exactly once; a pooled reference is granted and mapped; granted references are exactly the
    pooled ones plus those of outstanding requests; and once every kept reference is pooled, a
    request no larger than what is kept maps nothing new.
    """

    def __init__(self) -> None:
        super().__init__()
        self.grants = GrantTable()
        self.pool = BlkfrontGrantPool(self.grants)
        self.tree = PersistentGrantTree(0)
        self.outstanding: list[tuple[list[int], list[int]]] = []

    @initialize(limit=st.integers(0, 40))
    def start(self, limit: int) -> None:
        self.tree = PersistentGrantTree(limit)

    @rule(pages=st.integers(1, 24))
    def submit(self, pages: int) -> None:
        refs = [self.pool.get() for _ in range(pages)]
        assert len(set(refs)) == pages
        maps_before = self.grants.maps
        kept_idle = self.pool.persistent
        transient = []
        for ref in refs:
            if self.tree.lookup(ref):
                continue
            self.grants.map(ref)
            if not self.tree.keep(ref):
                transient.append(ref)
        if pages <= kept_idle:   # all of them came from the head of the list: already kept
            assert self.grants.maps == maps_before
        self.outstanding.append((refs, transient))

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.outstanding) - 1))
        refs, transient = self.outstanding.pop(index)
        for ref in transient:
            self.grants.unmap(ref)
        for ref in refs:
            assert self.pool.put(ref) is (ref in self.tree)

    @invariant()
    def consistent(self) -> None:
        assert len(self.tree) <= self.tree.limit
        self.pool.check()
        for ref in self.tree._kept:
            assert self.grants.map_count.get(ref) == 1
        in_flight = {ref for refs, _t in self.outstanding for ref in refs}
        pooled = {ref for ref in self.pool._entries if ref is not None}
        assert not in_flight & pooled
        assert self.grants.granted == in_flight | pooled
        transient = {ref for _r, refs in self.outstanding for ref in refs}
        mapped = set(self.grants.map_count)
        assert mapped == set(self.tree._kept) | transient


PersistentGrantMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40,
                                                    deadline=None)
TestPersistentGrantsStateful = PersistentGrantMachine.TestCase
