"""A split virtqueue (VIRTIO 1.x "split ring"), as the driver and the device see it.

This is the data structure itself, with no simulated time: the SimPy components in
:mod:`virtlab.paths.virtio` call it and charge the CPU cost of each operation. Layout and rules
follow the virtio specification (S1) and Linux's implementation (S3, S4).

* **Descriptor table**: ``size`` entries ``(len, flags, next)``; flags ``NEXT`` (the chain
  continues at ``next``), ``WRITE`` (device-writable) and ``INDIRECT`` (the entry points to a
  separate table holding the chain, so the whole chain takes one entry of the ring's table).
  Free descriptors are linked through ``next`` from ``free_head``, as in Linux.
* **Available ring** (written by the driver): ``flags``, ``idx``, ``ring[size]`` of chain heads and
  ``used_event`` (with event index).
* **Used ring** (written by the device): ``flags``, ``idx``, ``ring[size]`` of ``(id, len)`` and
  ``avail_event`` (with event index).
* **Indexes** are free-running 16-bit counters that wrap at 65536; the slot is ``idx % size``.
  ``size`` is a power of two up to 32768, so ``idx`` distinguishes a full ring from an empty one.

Notification suppression, both ways. Without ``VIRTIO_F_EVENT_IDX`` the device sets
``USED_F_NO_NOTIFY`` while it is busy and the driver sets ``AVAIL_F_NO_INTERRUPT`` while it polls
(hints: a notification may still be sent). With event index, each side publishes the index at
which it wants to hear from the other (``avail_event``, ``used_event``) and the other side
notifies iff :func:`vring_need_event` says its last batch crossed that point.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SplitVirtqueue", "Chain", "vring_need_event", "MAX_QUEUE_SIZE",
           "VIRTQ_DESC_F_NEXT", "VIRTQ_DESC_F_WRITE", "VIRTQ_DESC_F_INDIRECT",
           "VIRTQ_USED_F_NO_NOTIFY", "VIRTQ_AVAIL_F_NO_INTERRUPT", "DESC_STATES"]

U16 = 0xFFFF
#: "The maximum Queue Size value is 32768" (S1): the largest power of two a 16-bit index can use.
MAX_QUEUE_SIZE = 32768
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_USED_F_NO_NOTIFY = 1
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
#: Life cycle of a descriptor chain (see :meth:`SplitVirtqueue.state_counts`).
DESC_STATES = ("free", "available", "in_flight", "used")
#: Where ``used_event`` is parked while callbacks are disabled: half the index space ahead,
#: which the device cannot cross with at most 32768 buffers outstanding.
_FAR = 0x8000


def vring_need_event(event_idx: int, new_idx: int, old: int) -> bool:
    """True iff moving an index from ``old`` to ``new_idx`` crossed ``event_idx`` (mod 2**16).

    Linux ``vring_need_event`` (S3): ``(u16)(new_idx - event_idx - 1) < (u16)(new_idx - old)``,
    i.e. ``event_idx`` lies in ``[old, new_idx)`` modulo 2**16. Both sides use it: the driver to
    decide a kick (``event_idx = avail_event``), the device an interrupt (``used_event``).
    """
    return ((new_idx - event_idx - 1) & U16) < ((new_idx - old) & U16)


@dataclass(frozen=True, slots=True)
class Chain:
    """What the device reads when it pops a chain: its head and its elements.

    ``elements`` are ``(len_bytes, writable)`` in chain order, device-readable ones first;
    ``indirect`` says whether they came from an indirect table (one ring descriptor).
    """

    head: int
    elements: tuple[tuple[int, bool], ...]
    indirect: bool

    @property
    def readable_bytes(self) -> int:
        """Bytes the device may read (driver -> device)."""
        return sum(n for n, w in self.elements if not w)

    @property
    def writable_bytes(self) -> int:
        """Bytes the device may write (device -> driver)."""
        return sum(n for n, w in self.elements if w)


class SplitVirtqueue:
    """One split virtqueue: descriptor table, available ring, used ring and both sides' state.

    States of a chain: *free* -> *available* (driver added it and published ``avail.idx``) ->
    *in flight* (device popped it) -> *used* (device added it to the used ring) -> *free*
    (driver reclaimed it with :meth:`get_buf`). Invariants (checked by :meth:`check`):

    * every descriptor of the table is in exactly one state; ``num_free`` counts the free ones;
    * ``0 <= (avail.idx - used.idx) mod 2**16 <= size`` and the same for the driver's
      ``avail.idx - last_used_idx``;
    * the device pops chains in available-ring order and may use them in any order, each exactly
      once; the driver reclaims them in used-ring order.

    Parameters
    ----------
    size:
        Queue size: a power of two in [1, 32768].
    event_idx:
        Negotiated ``VIRTIO_F_EVENT_IDX``: suppression by event index instead of flags.
    indirect:
        Negotiated ``VIRTIO_F_INDIRECT_DESC``: chains of two or more elements take one entry.
    start_index:
        Initial value of every index (0 on a real device; near 65535 to watch the wrap).
    delay_fraction:
        Fraction of the outstanding buffers after which :meth:`enable_cb_delayed` asks for an
        interrupt (Linux: 3/4, S4).

    """

    def __init__(self, size: int, *, event_idx: bool = True, indirect: bool = True,
                 start_index: int = 0, delay_fraction: float = 0.75) -> None:
        if not 1 <= size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise ValueError(f"size must be a power of two in [1, {MAX_QUEUE_SIZE}], got {size}")
        start = start_index & U16
        self.size = size
        self.mask = size - 1
        self.event_idx = event_idx
        self.indirect = indirect
        self.delay_fraction = delay_fraction
        # Descriptor table and its free list (linked through `next`, like Linux).
        self.desc_len = [0] * size
        self.desc_flags = [0] * size
        self.desc_next = [(i + 1) % size for i in range(size)]
        self.free_head = 0
        self.num_free = size
        self._indirect_tables: dict[int, tuple[tuple[int, bool], ...]] = {}
        self._tokens: dict[int, Any] = {}
        self._chain_len: dict[int, int] = {}
        # Available ring (driver-written) and used ring (device-written).
        self.avail_flags = 0
        self.avail_idx = start
        self.avail_ring = [0] * size
        self.used_event = start
        self.used_flags = 0
        self.used_idx = start
        self.used_ring: list[tuple[int, int]] = [(0, 0)] * size
        self.avail_event = start
        # Driver-private state.
        self.num_added = 0
        self.last_used_idx = start
        self.last_kick_window = (start, start)
        self.callbacks_enabled = True
        # Device-private state.
        self.last_avail_idx = start
        self.used_shadow = start
        self.signalled_used = start
        self.last_signal_window = (start, start)
        self.notify_enabled = True
        self._in_flight: set[int] = set()

    # Driver side ------------------------------------------------------------------------------
    def descriptors_needed(self, elements: int) -> int:
        """Table entries a chain of ``elements`` takes (1 with indirect descriptors)."""
        return 1 if (self.indirect and elements > 1) else elements

    def add(self, out_lens: Sequence[int], in_lens: Sequence[int], token: Hashable) -> int | None:
        """Add a chain (``out_lens`` device-readable, then ``in_lens`` writable) and publish it.

        Returns the head descriptor, or ``None`` if too few descriptors are free (Linux returns
        ``-ENOSPC``; the driver then stops its queue). Like Linux, ``avail.idx`` is published
        at once; the kick decision is deferred to :meth:`kick_prepare` at the end of a burst.
        """
        elements = [(n, False) for n in out_lens] + [(n, True) for n in in_lens]
        if not elements:
            raise ValueError("a chain needs at least one element")
        if len(elements) > self.size and not self.indirect:
            raise ValueError(f"a chain of {len(elements)} exceeds the queue size {self.size}")
        needed = self.descriptors_needed(len(elements))
        if self.num_free < needed:
            return None
        if self.num_added >= U16:
            raise RuntimeError("65535 chains added without kick_prepare(); Linux kicks here")
        head = self.free_head
        if needed == 1 and len(elements) > 1:
            self._indirect_tables[head] = tuple(elements)
            self.desc_len[head] = 16 * len(elements)
            self.desc_flags[head] = VIRTQ_DESC_F_INDIRECT
            self.free_head = self.desc_next[head]
        else:
            index = head
            for position, (nbytes, writable) in enumerate(elements):
                self.desc_len[index] = nbytes
                last = position == len(elements) - 1
                flags = (0 if last else VIRTQ_DESC_F_NEXT) | (VIRTQ_DESC_F_WRITE if writable
                                                             else 0)
                self.desc_flags[index] = flags
                if last:
                    self.free_head = self.desc_next[index]
                else:
                    index = self.desc_next[index]
        self.num_free -= needed
        self._chain_len[head] = needed
        self._tokens[head] = token
        self.avail_ring[self.avail_idx & self.mask] = head
        self.avail_idx = (self.avail_idx + 1) & U16
        self.num_added += 1
        return head

    def kick_prepare(self) -> bool:
        """End of a burst: must the driver notify the device? (``virtqueue_kick_prepare``).

        With event index: iff ``avail_event`` lies in the window of chains added since the
        last call; otherwise iff the device has not set ``USED_F_NO_NOTIFY``.
        """
        new = self.avail_idx
        old = (new - self.num_added) & U16
        self.num_added = 0
        self.last_kick_window = (old, new)
        if self.event_idx:
            return vring_need_event(self.avail_event, new, old)
        return old != new and not self.used_flags & VIRTQ_USED_F_NO_NOTIFY

    def has_used(self) -> bool:
        """Whether there are used chains the driver has not reclaimed."""
        return self.last_used_idx != self.used_idx

    def get_buf(self) -> tuple[Any, int] | None:
        """Reclaim the next used chain: ``(token, bytes written)``, or ``None``.

        Its descriptors go back to the free list. With callbacks enabled the driver also moves
        ``used_event`` to the next entry (Linux ``virtqueue_get_buf``), so the device interrupts
        on the next used buffer.
        """
        if self.last_used_idx == self.used_idx:
            return None
        head, written = self.used_ring[self.last_used_idx & self.mask]
        self.last_used_idx = (self.last_used_idx + 1) & U16
        self._free_chain(head)
        if self.callbacks_enabled:
            self.used_event = self.last_used_idx
        elif self.event_idx:
            # Keep the parked event out of reach as last_used_idx advances (see disable_cb).
            self.used_event = (self.last_used_idx + _FAR) & U16
        return self._tokens.pop(head), written

    def _free_chain(self, head: int) -> None:
        count = self._chain_len.pop(head)
        self._indirect_tables.pop(head, None)
        tail = head
        for _ in range(count - 1):
            tail = self.desc_next[tail]
        self.desc_next[tail] = self.free_head
        self.free_head = head
        self.num_free += count

    def disable_cb(self) -> None:
        """Ask the device not to interrupt (the driver is polling).

        Flags: set ``AVAIL_F_NO_INTERRUPT``. Event index: park ``used_event`` half the index
        space ahead. (Linux writes 0 there, "a hack" by its own comment; parking it far away
        gives the same effect without the rare spurious interrupt at the wrap.)
        """
        self.callbacks_enabled = False
        if self.event_idx:
            self.used_event = (self.last_used_idx + _FAR) & U16
        else:
            self.avail_flags |= VIRTQ_AVAIL_F_NO_INTERRUPT

    def enable_cb(self) -> bool:
        """Re-enable interrupts; return True if the ring is empty (safe to sleep).

        ``virtqueue_enable_cb_prepare`` + ``virtqueue_poll``: the event is placed at the next
        entry, then the used index is re-checked to close the race with the device.
        """
        self.callbacks_enabled = True
        if self.event_idx:
            self.used_event = self.last_used_idx
        else:
            self.avail_flags &= ~VIRTQ_AVAIL_F_NO_INTERRUPT
        return not self.has_used()

    def enable_cb_delayed(self) -> bool:
        """Re-enable interrupts, but only after ``delay_fraction`` of the outstanding buffers.

        ``virtqueue_enable_cb_delayed`` (S4): ``used_event = last_used + 3/4 * outstanding``.
        Returns False if that many are already used (the caller should reclaim now). Without
        event index the delay cannot be expressed and this is :meth:`enable_cb`.
        """
        if not self.event_idx:
            return self.enable_cb()
        self.callbacks_enabled = True
        outstanding = (self.avail_idx - self.last_used_idx) & U16
        bufs = int(outstanding * self.delay_fraction)
        self.used_event = (self.last_used_idx + bufs) & U16
        return ((self.used_idx - self.last_used_idx) & U16) <= bufs

    # Device side ------------------------------------------------------------------------------
    def has_avail(self) -> bool:
        """Whether the driver has published chains the device has not popped."""
        return self.last_avail_idx != self.avail_idx

    def pop(self) -> Chain | None:
        """Take the next available chain (``virtqueue_pop`` / ``vhost_get_vq_desc``)."""
        if self.last_avail_idx == self.avail_idx:
            return None
        head = self.avail_ring[self.last_avail_idx & self.mask]
        self.last_avail_idx = (self.last_avail_idx + 1) & U16
        if head in self._in_flight:
            raise RuntimeError(f"descriptor {head} popped twice")
        self._in_flight.add(head)
        return Chain(head, self._walk(head), head in self._indirect_tables)

    def _walk(self, head: int) -> tuple[tuple[int, bool], ...]:
        table = self._indirect_tables.get(head)
        if table is not None:
            return table
        elements = []
        index = head
        while True:
            flags = self.desc_flags[index]
            elements.append((self.desc_len[index], bool(flags & VIRTQ_DESC_F_WRITE)))
            if not flags & VIRTQ_DESC_F_NEXT:
                return tuple(elements)
            index = self.desc_next[index]

    def token_of(self, head: int) -> Any:
        """The driver's token for a chain (in a real device: what the buffers contain)."""
        return self._tokens[head]

    def add_used(self, head: int, written_bytes: int) -> None:
        """Put a finished chain on the used ring (not yet visible: see :meth:`flush_used`)."""
        if head not in self._in_flight:
            raise RuntimeError(f"descriptor {head} is not in flight")
        self._in_flight.discard(head)
        self.used_ring[self.used_shadow & self.mask] = (head, written_bytes)
        self.used_shadow = (self.used_shadow + 1) & U16

    def flush_used(self) -> int:
        """Publish ``used.idx`` (one write for a batch); return how many entries it made visible."""
        count = (self.used_shadow - self.used_idx) & U16
        self.used_idx = self.used_shadow
        return count

    def need_interrupt(self) -> bool:
        """After a flush: must the device interrupt the driver? (``vhost_notify``).

        Compares with the used index at the previous decision, so several flushes between two
        decisions count as one batch.
        """
        old = self.signalled_used
        new = self.used_idx
        self.signalled_used = new
        self.last_signal_window = (old, new)
        if old == new:
            return False
        if self.event_idx:
            return vring_need_event(self.used_event, new, old)
        return not self.avail_flags & VIRTQ_AVAIL_F_NO_INTERRUPT

    def disable_notify(self) -> None:
        """The device is busy: ask for no kicks.

        Flags only: with event index the parked ``avail_event`` is already behind the driver
        and is not crossed again, so there is nothing to write.
        """
        self.notify_enabled = False
        if not self.event_idx:
            self.used_flags |= VIRTQ_USED_F_NO_NOTIFY

    def enable_notify(self) -> bool:
        """The device is about to sleep: ask for a kick; return True if more work appeared.

        ``vhost_enable_notify``: clear the flag, or set ``avail_event`` to the next entry, then
        re-check the available index (the final check that closes the race with the driver).
        """
        self.notify_enabled = True
        if self.event_idx:
            self.avail_event = self.avail_idx
        else:
            self.used_flags &= ~VIRTQ_USED_F_NO_NOTIFY
        return self.has_avail()

    # Observation ------------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        """Chains available or in flight at the device: ``(avail.idx - used.idx) mod 2**16``."""
        return (self.avail_idx - self.used_idx) & U16

    @property
    def used_backlog(self) -> int:
        """Used chains the driver has not reclaimed yet: ``used.idx - last_used_idx``."""
        return (self.used_idx - self.last_used_idx) & U16

    @property
    def driver_outstanding(self) -> int:
        """Chains the driver added and has not reclaimed."""
        return (self.avail_idx - self.last_used_idx) & U16

    def indexes(self) -> str:
        """The indexes as one line, for traces."""
        text = (f"avail.idx={self.avail_idx} used.idx={self.used_idx} "
                f"last_avail={self.last_avail_idx} last_used={self.last_used_idx} "
                f"free={self.num_free}")
        if self.event_idx:
            text += f" avail_event={self.avail_event} used_event={self.used_event}"
        else:
            text += (f" NO_NOTIFY={self.used_flags & 1} "
                     f"NO_INTERRUPT={self.avail_flags & 1}")
        return text

    def state_counts(self) -> dict[str, int]:
        """Descriptors per state (walks the table; for tests and invariant checks)."""
        counts = dict.fromkeys(DESC_STATES, 0)
        counts["free"] = self.num_free
        available = {self.avail_ring[(self.last_avail_idx + k) & self.mask]
                     for k in range((self.avail_idx - self.last_avail_idx) & U16)}
        used = {self.used_ring[(self.last_used_idx + k) & self.mask][0]
                for k in range((self.used_shadow - self.last_used_idx) & U16)}
        for head, count in self._chain_len.items():
            if head in available:
                counts["available"] += count
            elif head in self._in_flight:
                counts["in_flight"] += count
            elif head in used:
                counts["used"] += count
            else:
                raise AssertionError(f"chain {head} is in no state")
        return counts

    def check(self) -> None:
        """Raise AssertionError if an invariant of the class docstring is violated."""
        counts = self.state_counts()
        if sum(counts.values()) != self.size:
            raise AssertionError(f"descriptor states {counts} do not add up to {self.size}")
        if self.outstanding > self.size or self.driver_outstanding > self.size:
            raise AssertionError(f"more than {self.size} outstanding: {self.indexes()}")
        free = 0
        index = self.free_head
        for _ in range(self.num_free):
            free += 1
            index = self.desc_next[index]
        if free != self.num_free:
            raise AssertionError("free list shorter than num_free")
