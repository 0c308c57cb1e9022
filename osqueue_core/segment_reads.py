"""Reading segments: the ones commands wait for, the key indexes of keyed segments (after
a takeover), and read-ahead of the best cursors.

Reads run beside the state operation. Each is checked against its reference
(:func:`~osqueue_core.segment_codec.decode_segment`): a mismatch, or a store reporting
the object damaged, fails the broker with ``CorruptState`` naming the segment, before
anything is served from it. A segment that is **absent** although our durable state
references it means we were replaced (a successor dropped it), or it was deleted by
hand: the state is read; another owner there gives ``BrokerReplaced``, our own gives
``SegmentMissing``. Failed reads are retried after a backoff. Loaded segments stay
within ``segment_cache_bytes`` (least recently used evicted first); a read a command
waits for is issued even when that overfills the cache for a while, and so is the read
of a segment whose due window has begun before its jobs' due times are known.

A keyed segment whose keys are not known (:attr:`SegmentIndex.unindexed`: the state was
just taken over) is read for its key index only: the whole object is read and checked
against its reference, its header parsed, its records not (keyed pushes wait for these
reads; nothing else does). They go before read-ahead, with a cap of their own.
"""

from __future__ import annotations

from collections.abc import Callable

from osqueue_core.backoffs import KeyBackoffs
from osqueue_core.clock import Clock
from osqueue_core.config import BrokerConfig
from osqueue_core.effects import ReadObject
from osqueue_core.errors import CorruptState, SegmentMissing
from osqueue_core.events import ObjectCorrupt, ObjectRead, StorageFailed, StorageResult
from osqueue_core.outbox import Outbox
from osqueue_core.quoting import quote
from osqueue_core.rules import JobRules
from osqueue_core.segment_codec import decode_segment, decode_segment_keys
from osqueue_core.segments import loaded_cost

#: Segment reads in flight at once, at most (those a command waits for aside) ...
MAX_READS = 4
#: ... and reads of key indexes after a takeover, besides: keyed pushes wait for all of
#: them (on S3, ~500 reads of ~1 MB for a million keyed jobs).
KEY_INDEX_READS = 8


class SegmentReader:
    """Segment reads in flight and waiting for their retry.

    ``owned`` raises unless this broker still owns the state object whose bytes it is
    given; ``on_loaded`` is told the queues of each segment loaded.
    """

    def __init__(
        self,
        config: BrokerConfig,
        clock: Clock,
        outbox: Outbox,
        rules: JobRules,
        owned: Callable[[bytes | None], object],
        on_loaded: Callable[[tuple[str, ...]], None],
    ) -> None:
        self._config = config
        self._clock = clock
        self._out = outbox
        self._rules = rules
        self._owned = owned
        self._on_loaded = on_loaded
        self._in_flight: set[str] = set()
        #: Those of them that read a key index only.
        self._key_reads: set[str] = set()
        self._backoffs = KeyBackoffs(config, clock)
        self._active = True
        #: Segment reads issued.
        self.reads = 0

    def pump(self) -> None:
        """Issue the reads that are due: key indexes and demanded ones first, then
        read-ahead."""
        if not self._active:
            return
        index = self._rules.table.segments
        wanted = index.wanted(self._config.read_ahead)
        keep = set(wanted) | set(index.demanded) | index.pinned | set(index.unindexed)
        # A key nobody needs any more (its jobs left, or read-ahead moved on) is not
        # retried: no retry stays due, so next_deadline() is never in the past.
        self._backoffs.keep_only(keep)
        passed_over: list[str] = []
        for key in index.unindexed:
            if key in self._in_flight or self._backoffs.waiting(key):
                continue
            if len(self._key_reads) >= KEY_INDEX_READS:
                # Tried again when a read in flight lands (not at a due backoff).
                passed_over.append(key)
                continue
            self._read(key, keys_only=True)
        for position, key in enumerate(wanted):
            segment = index.get(key)
            if segment is None or segment.records is not None or key in self._in_flight:
                continue
            if self._backoffs.waiting(key):
                continue
            demanded, needed = key in index.demanded, index.must_read(key)
            if not demanded and len(self._in_flight) - len(self._key_reads) >= MAX_READS:
                passed_over += wanted[position:]
                break
            room = index.make_room(loaded_cost(segment.ref), self._config.segment_cache_bytes, keep)
            if not (room or needed):
                passed_over += wanted[position:]
                break
            self._read(key)
        # Read-ahead that must wait for room (or for a read slot) is tried again when
        # the pump runs next, not at a backoff already due: a due retry left armed
        # would keep next_deadline() in the past, and a runtime ticking at it would spin.
        for key in passed_over:
            if key in index.demanded or self._backoffs.waiting(key):
                continue
            if index.must_read(key):
                self._backoffs.trying(key)  # (a read in flight lands first: pumped then)
            else:
                self._backoffs.succeeded(key)

    def next_deadline(self) -> float | None:
        return self._backoffs.next_deadline()

    def stop(self) -> None:
        self._active = False
        self._backoffs.clear()

    def _read(self, key: str, *, keys_only: bool = False) -> None:
        self._backoffs.trying(key)
        self._in_flight.add(key)
        if keys_only:
            self._key_reads.add(key)
        self.reads += 1
        self._out.issue(
            lambda op_id: ReadObject(op_id, key), lambda r: self._on_read(key, r, keys_only)
        )

    def _on_read(self, key: str, result: StorageResult, keys_only: bool = False) -> None:
        self._in_flight.discard(key)
        self._key_reads.discard(key)
        index = self._rules.table.segments
        segment = index.get(key)
        if not self._active or segment is None:
            return  # every job left it meanwhile: nothing to read any more
        if isinstance(result, ObjectCorrupt):
            raise CorruptState(
                f"segment {quote(key)}: storage reports it damaged "
                f"({quote(result.message, 300)}); osqueue will not serve or write on it: "
                "restore it from a backup"
            )
        if isinstance(result, StorageFailed):
            self._backoffs.failed(key)
            return
        assert isinstance(result, ObjectRead)
        if result.data is None:
            self._check_owner(key)
            return
        if keys_only:
            if key not in index.demanded:
                pairs = decode_segment_keys(result.data, segment.ref)
                self._backoffs.succeeded(key)
                index.keys_read(key, pairs)
                return
            # A command needs all of it meanwhile: loaded as if read for it.
            keep = set(index.demanded) | index.pinned
            index.make_room(loaded_cost(segment.ref), self._config.segment_cache_bytes, keep)
        contents = decode_segment(result.data, segment.ref)
        self._backoffs.succeeded(key)
        table = self._rules.table
        index.loaded(key, contents, lambda job_id: table.get(job_id) is not None)
        self._on_loaded(tuple(group.queue for group in segment.ref.groups))

    def _check_owner(self, key: str) -> None:
        """A referenced segment is absent: replaced, or lost? The state tells."""
        self._in_flight.add(key)
        state_key = self._config.state_key

        def on_state(result: StorageResult) -> None:
            self._in_flight.discard(key)
            if not self._active:
                return
            if not isinstance(result, ObjectRead):
                self._backoffs.failed(key)  # cannot tell now: read the segment later
                return
            self._owned(result.data)  # raises BrokerReplaced when another owner wrote it
            if self._rules.table.segments.get(key) is not None:
                raise SegmentMissing(key)

        self._out.issue(lambda op_id: ReadObject(op_id, state_key), on_state)
