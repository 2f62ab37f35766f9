"""Xen's shared I/O ring, event channels and grant tables, as data structures (no time).

:class:`XenSharedRing` follows ``xen/include/public/io/ring.h`` (S10): one
shared page holds ``req_prod``, ``req_event``, ``rsp_prod``, ``rsp_event`` and ``size`` slots that
requests and responses share (a response overwrites the slot of a request the backend has
consumed). Each side also keeps private indexes: the frontend ``req_prod_pvt`` and ``rsp_cons``,
the backend ``rsp_prod_pvt`` and ``req_cons``. Indexes are free-running ``RING_IDX`` values
(32-bit unsigned) that wrap at 2**32.

The notification rule is the same hold-off as virtio's event index: a producer that pushes
its private index notifies iff ``(new - event) < (new - old)`` (mod 2**32), i.e. iff the other
side's ``*_event`` lies in ``(old, new]``. A consumer about to go idle runs the *final check*:
it sets ``*_event = cons + 1`` (wake me on the very next entry) and looks again.
"""

from __future__ import annotations

from collections import deque
from typing import Any

#: References in a domain's grant table: 32 frames x 512 version-1 entries (S13). The
#: paravirtual parameters are checked against it so that the rings can never need more.
MAX_GRANTS = 32 * 512

__all__ = ["XenSharedRing", "EventChannel", "GrantTable", "PersistentGrantTree",
           "BlkfrontGrantPool", "RING_IDX_MASK"]

#: RING_IDX is an unsigned 32-bit integer.
RING_IDX_MASK = 0xFFFFFFFF


class XenSharedRing:
    """A Xen shared ring with its frontend (requests) and backend (responses) sides.

    Slot states, in index order: *response* waiting for the frontend (``rsp_cons`` to
    ``rsp_prod``), *answered* but not yet pushed (to ``rsp_prod_pvt``), *in service* at the
    backend (to ``req_cons``), *request* waiting for the backend (to ``req_prod``), *request*
    written but not yet pushed (to ``req_prod_pvt``), then *free*. Invariants (checked by
    :meth:`check`): those indexes are in that order modulo 2**32, and
    ``req_prod_pvt - rsp_cons <= size``: the frontend never has more than ``size`` requests
    outstanding (``RING_FULL``), because the macros do no flow control of their own.

    Parameters
    ----------
    size:
        Slots on the ring page: a power of two (256 for netif, 32 for blkif, S11-S13).
    start_index:
        Initial value of every index (``SHARED_RING_INIT`` uses 0).

    """

    def __init__(self, size: int, *, start_index: int = 0) -> None:
        if size < 1 or size & (size - 1):
            raise ValueError(f"size must be a power of two, got {size}")
        start = start_index & RING_IDX_MASK
        self.size = size
        self.mask = size - 1
        self.slots: list[Any] = [None] * size
        # Shared page.
        self.req_prod = self.rsp_prod = start
        self.req_event = self.rsp_event = (start + 1) & RING_IDX_MASK
        # Frontend-private and backend-private indexes.
        self.req_prod_pvt = self.rsp_cons = start
        self.rsp_prod_pvt = self.req_cons = start
        self.last_push_window = (start, start)

    @staticmethod
    def _crossed(event: int, new: int, old: int) -> bool:
        return ((new - event) & RING_IDX_MASK) < ((new - old) & RING_IDX_MASK)

    # Frontend -----------------------------------------------------------------------------------
    def free_requests(self) -> int:
        """``RING_FREE_REQUESTS``: slots the frontend may still fill."""
        return self.size - ((self.req_prod_pvt - self.rsp_cons) & RING_IDX_MASK)

    def full(self) -> bool:
        """``RING_FULL``."""
        return self.free_requests() == 0

    def put_request(self, request: Any) -> None:
        """Write a request at ``req_prod_pvt`` (not yet visible to the backend)."""
        if self.full():
            raise RuntimeError("ring full: the frontend must wait for responses")
        self.slots[self.req_prod_pvt & self.mask] = request
        self.req_prod_pvt = (self.req_prod_pvt + 1) & RING_IDX_MASK

    def push_requests_and_check_notify(self) -> bool:
        """``RING_PUSH_REQUESTS_AND_CHECK_NOTIFY``: publish; True if the backend must be told."""
        old, new = self.req_prod, self.req_prod_pvt
        self.req_prod = new
        self.last_push_window = (old, new)
        return self._crossed(self.req_event, new, old)

    def unconsumed_responses(self) -> int:
        """Responses pushed by the backend that the frontend has not consumed."""
        return (self.rsp_prod - self.rsp_cons) & RING_IDX_MASK

    def get_response(self) -> Any:
        """Consume the next response (the slot becomes free)."""
        if not self.unconsumed_responses():
            raise RuntimeError("no unconsumed response")
        response = self.slots[self.rsp_cons & self.mask]
        self.slots[self.rsp_cons & self.mask] = None
        self.rsp_cons = (self.rsp_cons + 1) & RING_IDX_MASK
        return response

    def final_check_for_responses(self) -> bool:
        """``RING_FINAL_CHECK_FOR_RESPONSES``: ask for an event on the next response, recheck."""
        if self.unconsumed_responses():
            return True
        self.rsp_event = (self.rsp_cons + 1) & RING_IDX_MASK
        return self.unconsumed_responses() > 0

    # Backend ------------------------------------------------------------------------------------
    def unconsumed_requests(self) -> int:
        """``RING_HAS_UNCONSUMED_REQUESTS``: requests the backend may consume now."""
        pushed = (self.req_prod - self.req_cons) & RING_IDX_MASK
        room = self.size - ((self.req_cons - self.rsp_prod_pvt) & RING_IDX_MASK)
        return min(pushed, room)

    def get_request(self) -> Any:
        """Consume the next request (its slot now awaits a response)."""
        if not self.unconsumed_requests():
            raise RuntimeError("no unconsumed request")
        request = self.slots[self.req_cons & self.mask]
        self.req_cons = (self.req_cons + 1) & RING_IDX_MASK
        return request

    def put_response(self, response: Any) -> None:
        """Write a response at ``rsp_prod_pvt`` (over a consumed request's slot)."""
        if self.rsp_prod_pvt == self.req_cons:
            raise RuntimeError("no consumed request left to answer")
        self.slots[self.rsp_prod_pvt & self.mask] = response
        self.rsp_prod_pvt = (self.rsp_prod_pvt + 1) & RING_IDX_MASK

    def push_responses_and_check_notify(self) -> bool:
        """``RING_PUSH_RESPONSES_AND_CHECK_NOTIFY``: publish; True if the frontend must know."""
        old, new = self.rsp_prod, self.rsp_prod_pvt
        self.rsp_prod = new
        self.last_push_window = (old, new)
        return self._crossed(self.rsp_event, new, old)

    def final_check_for_requests(self) -> bool:
        """``RING_FINAL_CHECK_FOR_REQUESTS``: ask for an event on the next request, recheck."""
        if self.unconsumed_requests():
            return True
        self.req_event = (self.req_cons + 1) & RING_IDX_MASK
        return self.unconsumed_requests() > 0

    def request_event_at(self, needed: int) -> bool:
        """Custom final check (netback receive): wake me when ``needed`` requests are there.

        Returns True if they already are.
        """
        if self.unconsumed_requests() >= needed:
            return True
        self.req_event = (self.req_cons + needed) & RING_IDX_MASK
        return self.unconsumed_requests() >= needed

    # Observation --------------------------------------------------------------------------------
    @property
    def backlog(self) -> int:
        """Requests pushed to the backend and not yet answered: ``req_prod - rsp_prod``."""
        return (self.req_prod - self.rsp_prod) & RING_IDX_MASK

    @property
    def outstanding(self) -> int:
        """Requests the frontend has pushed and whose responses it has not consumed."""
        return (self.req_prod - self.rsp_cons) & RING_IDX_MASK

    def indexes(self) -> str:
        """The indexes as one line, for traces."""
        return (f"req_prod={self.req_prod} req_event={self.req_event} "
                f"rsp_prod={self.rsp_prod} rsp_event={self.rsp_event} "
                f"req_cons={self.req_cons} rsp_cons={self.rsp_cons}")

    def check(self) -> None:
        """Raise AssertionError if the index order or the ``RING_FULL`` bound is violated."""
        chain = [self.rsp_cons, self.rsp_prod, self.rsp_prod_pvt, self.req_cons, self.req_prod,
                 self.req_prod_pvt]
        total = 0
        for low, high in zip(chain, chain[1:], strict=False):
            total += (high - low) & RING_IDX_MASK
        if total != (self.req_prod_pvt - self.rsp_cons) & RING_IDX_MASK:
            raise AssertionError(f"indexes out of order: {self.indexes()}")
        if total > self.size:
            raise AssertionError(f"more than {self.size} outstanding: {self.indexes()}")


class EventChannel:
    """One event channel's receiving end: a pending bit and a mask (2-level ABI, S15).

    States: *idle*, *pending* (an event was sent and the receiver has not cleared it) and
    *masked*. Invariant: while pending, further sends raise no new upcall; they are coalesced
    ("further notifications are masked until the pending bit is cleared").
    """

    __slots__ = ("name", "pending", "masked", "sends", "upcalls")

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending = False
        self.masked = False
        self.sends = 0
        self.upcalls = 0

    def send(self) -> bool:
        """``EVTCHNOP_send``: set pending; return True if this raises an upcall."""
        self.sends += 1
        if self.pending:
            return False
        self.pending = True
        if self.masked:
            return False
        self.upcalls += 1
        return True

    def clear(self) -> None:
        """The receiver's handler clears the pending bit before it looks at the ring."""
        self.pending = False

    def unmask(self) -> bool:
        """Unmask; return True if an event was pending (it is delivered now)."""
        self.masked = False
        if self.pending:
            self.upcalls += 1
            return True
        return False


class GrantTable:
    """A domain's grant table: pages it lets a backend domain map or copy (S13, S14).

    States of a reference: *free* -> *granted* (frontend wrote the entry) -> *mapped* (backend
    mapped it; possibly several times) -> *granted* again after unmap -> *free* when the frontend
    ends access. Invariants: a mapped reference cannot be ended (Linux defers the end of access
    while a mapping exists); at most ``max_grants`` references exist (32 frames x 512, S13).
    """

    def __init__(self, max_grants: int = MAX_GRANTS) -> None:
        self.max_grants = max_grants
        self._free: deque[int] = deque(range(max_grants))
        self.granted: set[int] = set()
        self.map_count: dict[int, int] = {}
        self.maps = self.unmaps = self.copies = self.grants = 0

    def grant(self) -> int | None:
        """Grant a page to the backend domain; return its reference, or None if none is left."""
        if not self._free:
            return None
        ref = self._free.popleft()
        self.granted.add(ref)
        self.grants += 1
        return ref

    def end_access(self, ref: int) -> bool:
        """Revoke a grant; return False (and keep it) while the backend still maps it."""
        if ref not in self.granted:
            raise KeyError(f"grant {ref} is not granted")
        if self.map_count.get(ref, 0):
            return False
        self.granted.discard(ref)
        self._free.append(ref)
        return True

    def map(self, ref: int) -> None:
        """``GNTTABOP_map_grant_ref``: the backend maps the page."""
        if ref not in self.granted:
            raise KeyError(f"grant {ref} is not granted")
        self.map_count[ref] = self.map_count.get(ref, 0) + 1
        self.maps += 1

    def unmap(self, ref: int) -> None:
        """``GNTTABOP_unmap_grant_ref``: the backend drops a mapping (TLBs are flushed)."""
        count = self.map_count.get(ref, 0)
        if count == 0:
            raise KeyError(f"grant {ref} is not mapped")
        if count == 1:
            del self.map_count[ref]
        else:
            self.map_count[ref] = count - 1
        self.unmaps += 1

    def copy(self, ref: int) -> None:
        """``GNTTABOP_copy``: the hypervisor copies to or from the granted page."""
        if ref not in self.granted:
            raise KeyError(f"grant {ref} is not granted")
        self.copies += 1

    @property
    def in_use(self) -> int:
        """References currently granted."""
        return len(self.granted)


class PersistentGrantTree:
    """blkback's persistent grants: references it keeps mapped, at most ``limit`` (S140).

    ``xen_blkbk_map`` looks each segment's reference up (``get_persistent_gnt``); a reference it
    finds needs no map hypercall. It maps the others and keeps each one mapped
    (``add_persistent_gnt``) while fewer than ``limit`` are kept (``max_persistent_grants``);
    the rest are used once and unmapped after the I/O, as without the feature. Invariant:
    ``len(self) <= limit``; a kept reference is never unmapped while the device is connected
    (Linux's LRU purge of unused grants, when the tree is full, is not modelled).
    """

    __slots__ = ("limit", "_kept", "hits", "misses")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.limit = limit
        self._kept: set[int] = set()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, ref: object) -> bool:
        return ref in self._kept

    def lookup(self, ref: int) -> bool:
        """``get_persistent_gnt``: True (a hit) if ``ref`` is kept mapped."""
        if ref in self._kept:
            self.hits += 1
            return True
        self.misses += 1
        return False

    def keep(self, ref: int) -> bool:
        """After mapping ``ref``: keep it mapped if there is room; True if it was kept."""
        if ref in self._kept:
            raise KeyError(f"grant {ref} is already kept")
        if len(self._kept) >= self.limit:
            return False
        self._kept.add(ref)
        return True


class BlkfrontGrantPool:
    """blkfront's list of grants with persistent grants on (``rinfo->grants``, S141).

    ``get_grant`` takes the entry at the head: an entry that still holds a reference is reused
    as it is (the backend keeps it mapped: no new grant); an empty one claims and grants a new
    reference. At completion each reference the backend still maps goes back to the head, so it
    is used first again; the others are revoked (``gnttab_end_foreign_access``) and their entry
    goes to the tail, empty. Entries are created on demand (Linux preallocates as many as a full
    ring can use; the references are claimed lazily either way).

    Invariants: every reference in the pool is granted and mapped by the backend (checked by
    :meth:`check` against the :class:`GrantTable`); references in the pool are distinct.
    """

    __slots__ = ("grants", "_entries", "reused", "granted")

    def __init__(self, grants: GrantTable) -> None:
        self.grants = grants
        self._entries: deque[int | None] = deque()
        self.reused = self.granted = 0

    def get(self) -> int:
        """A reference for one page: the head entry's, or a newly granted one."""
        ref = self._entries.popleft() if self._entries else None
        if ref is not None:
            self.reused += 1
            return ref
        ref = self.grants.grant()
        assert ref is not None, "ring slots bound the grants in use"
        self.granted += 1
        return ref

    def put(self, ref: int) -> bool:
        """Return ``ref`` after its I/O; True if the backend still maps it (it stays granted)."""
        if self.grants.map_count.get(ref, 0):
            self._entries.appendleft(ref)
            return True
        self.grants.end_access(ref)
        self._entries.append(None)
        return False

    @property
    def persistent(self) -> int:
        """References held for reuse (``persistent_gnts_c``)."""
        return sum(ref is not None for ref in self._entries)

    def check(self) -> None:
        """Raise AssertionError if a pooled reference is duplicated, revoked or unmapped."""
        refs = [ref for ref in self._entries if ref is not None]
        if len(refs) != len(set(refs)):
            raise AssertionError(f"a reference is pooled twice: {refs}")
        for ref in refs:
            if ref not in self.grants.granted or not self.grants.map_count.get(ref, 0):
                raise AssertionError(f"pooled grant {ref} is not granted and mapped")
