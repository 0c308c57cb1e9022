"""Segments, stage 1: spills of due unkeyed jobs, references in the state, claims and
lookups that wait for a segment read, and every outcome of a segment's create."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from osqueue_core import (
    Broker,
    BrokerConfig,
    BrokerReplaced,
    Cancel,
    Cancelled,
    Claim,
    Claimed,
    Command,
    CorruptState,
    GetJob,
    JobInfo,
    ObjectWritten,
    Owner,
    Phase,
    Push,
    ReadObject,
    Reply,
    SegmentMissing,
    StateHeader,
    WriteObject,
    decode_header,
    decode_state,
    encode_job,
    encode_state,
)
from osqueue_core.codec import SCHEMA_VERSION
from osqueue_core.job import Job, JobSpec
from osqueue_core.segment_codec import decode_segment
from osqueue_core.segment_refs import digest_of

from .harness import Harness, SimStore, archived_ids

SEGMENTS = "segments/"


def config(**overrides: object) -> BrokerConfig:
    settings: dict[str, object] = {"spill_jobs": 4, "segment_jobs": 8, "read_ahead": 0}
    settings.update(overrides)
    return BrokerConfig(**settings)  # type: ignore[arg-type]


def state(store: SimStore) -> dict[str, object]:
    data = store.get("state.json")
    assert data is not None
    decoded: dict[str, object] = orjson.loads(data)
    return decoded


def push_ids(h: Harness, count: int, **fields: object) -> list[str]:
    ids = []
    for index in range(count):
        reply = h.submit(Push(h.request_id(), b"job-%d" % index, **fields))  # type: ignore[arg-type]
        assert reply is not None
        assert reply.ok
        ids.append(reply.result.job_id)  # type: ignore[union-attr]
    return ids


def claim_all(h: Harness, queues: tuple[str, ...] = ("default",)) -> list[str]:
    got = []
    while True:
        reply = h.submit(Claim(h.request_id(), "w", 0.0, queues))
        assert reply is not None
        if not isinstance(reply.result, Claimed):
            return got
        got.append(reply.result.job_id)


def segment_reads(h: Harness) -> list[int]:
    return h.pending_of(ReadObject, SEGMENTS)


def applied_after_one_read(h: Harness, make: Callable[[int], Command]) -> Reply:
    """Submit ``make(request_id)`` with storage held: it must wait, queued, for one
    segment read; then deliver everything. Its reply."""
    h.auto = False
    request = h.request_id()
    h.broker.submit(make(request), h.now)
    h.flush()
    [read] = segment_reads(h)
    assert request not in h.replies
    assert h.broker.stats().queued_commands == 1
    h.deliver(read)
    h.deliver_all()
    return h.replies[request]


def fail_segment_reads_until_answered(h: Harness, request: int, rounds: int = 10) -> None:
    """Answer segment reads "failed", each retry at its backoff (0.05, 0.1, 0.2 ...
    seconds later; ``next_deadline()`` never in the past), until ``request`` is
    answered."""
    for _ in range(rounds):
        h.deliver(segment_reads(h)[0], "failed")
        deadline = h.broker.next_deadline()
        assert deadline is not None
        assert deadline > h.now
        h.now = deadline
        h.broker.tick(h.now)
        h.flush()
        if request in h.replies:
            return


# -- spilling ------------------------------------------------------------------------


def test_a_spill_starts_at_spill_jobs_and_the_state_then_holds_a_ref_not_records() -> None:
    h = Harness.started(config=config())
    ids = push_ids(h, 3)
    assert h.store.keys(SEGMENTS) == []
    assert len(state(h.store)["jobs"]) == 3  # type: ignore[arg-type]
    ids += push_ids(h, 1)
    [key] = h.store.keys(SEGMENTS)
    stored = state(h.store)
    assert stored["schema_version"] == SCHEMA_VERSION
    assert stored["jobs"] == []
    [ref] = stored["segments"]  # type: ignore[misc]
    assert ref["key"] == key
    assert ref["jobs"] == 4
    assert ref["groups"] == [["default", 4, 0, 0, 1000.0]]
    assert "left" not in ref
    assert h.broker.job(ids[0]) is None  # no Job object for an untouched job
    stats = h.broker.stats()
    assert (stats.ready, stats.untouched, stats.segments) == (4, 4, 1)
    # The segment holds the very fragments the state held.
    segment = orjson.loads(h.store.get(key))  # type: ignore[arg-type]
    assert [job["id"] for job in segment["jobs"]] == ids


def test_the_segment_bytes_are_the_state_fragments_and_decode_against_the_ref() -> None:
    h = Harness.started(config=config())
    push_ids(h, 3)
    before = {job["id"]: orjson.dumps(job) for job in state(h.store)["jobs"]}  # type: ignore[attr-defined]
    push_ids(h, 1)
    decoded = decode_state(h.store.get("state.json"))  # type: ignore[arg-type]
    [ref] = decoded.segments
    contents = decode_segment(h.store.get(ref.key), ref)  # type: ignore[arg-type]
    for record in contents.records[:3]:
        assert orjson.dumps(record) == before[record["id"]]
    # Re-encoding the decoded state gives the stored bytes (canonical, refs included).
    from osqueue_core.segment_refs import encode_ref

    again = encode_state(
        decoded.header, [], None, b",".join(encode_ref(r) for r in decoded.segments)
    )
    assert again == h.store.get("state.json")


def test_custom_id_jobs_without_an_inverse_stay_inline() -> None:
    """Keyed and delayed jobs spill (stage 2); jobs whose ids do not give their seq back
    (a custom factory without ``job_id_seq``) never do."""
    custom = Harness.started(
        SimStore(), config(job_id_factory=lambda epoch, seq: f"job-{epoch}-{seq}")
    )
    push_ids(custom, 10)
    assert custom.store.keys(SEGMENTS) == []
    assert len(state(custom.store)["jobs"]) == 10  # type: ignore[arg-type]


def test_claims_follow_priority_then_fifo_across_inline_and_segment_jobs() -> None:
    h = Harness.started(config=config())
    low = push_ids(h, 5)  # four spill, one stays inline
    high = push_ids(h, 2, priority=3)
    later = push_ids(h, 1)
    assert h.broker.stats().segments == 2  # the second spill took the high ones
    assert claim_all(h) == high + low + later


def test_a_claim_on_an_unloaded_segment_waits_for_the_read_then_is_applied() -> None:
    store = SimStore()
    first = Harness.started(store, config=config())
    ids = push_ids(first, 4)
    successor = Harness.started(store, config(), identity="b")
    assert successor.broker.stats().segment_reads == 0  # opening read no segment
    reply = applied_after_one_read(successor, lambda request: Claim(request, "w"))
    assert isinstance(reply.result, Claimed)
    assert reply.result.job_id == ids[0]
    # Its claimed record and its left bit are in the same write.
    stored = state(store)
    assert [job["id"] for job in stored["jobs"]] == [ids[0]]  # type: ignore[attr-defined]
    assert stored["segments"][0]["left"] == [[0, 1]]  # type: ignore[index]


def test_commands_behind_a_waiting_claim_keep_their_order() -> None:
    store = SimStore()
    first = Harness.started(store, config=config())
    push_ids(first, 4)
    h = Harness.started(store, config(), identity="b")
    h.auto = False
    claim, push = h.request_id(), h.request_id()
    h.broker.submit(Claim(claim, "w"), h.now)
    h.broker.submit(Push(push, b"late", priority=9), h.now)
    h.flush()
    assert not h.replies
    h.deliver_all()
    assert h.replies[claim].result.job_id.startswith("000000000000-")  # type: ignore[union-attr]
    assert h.replies[push].ok


def test_get_job_and_cancel_of_an_untouched_job_wait_for_the_read() -> None:
    store = SimStore()
    first = Harness.started(store, config=config())
    ids = push_ids(first, 4)
    h = Harness.started(store, config(), identity="b")
    before = store.get("state.json")
    info = h.submit(GetJob(h.request_id(), ids[2]))
    assert isinstance(info.result, JobInfo)  # type: ignore[union-attr]
    assert (info.result.id, info.result.status) == (ids[2], "ready")  # type: ignore[union-attr]
    assert store.get("state.json") == before  # looking changed nothing
    assert h.broker.stats().untouched == 4
    cancelled = h.submit(Cancel(h.request_id(), ids[2]))
    assert cancelled.result == Cancelled(ids[2], True)  # type: ignore[union-attr]
    stored = state(store)
    assert stored["segments"][0]["left"] == [[2, 1]]  # type: ignore[index]
    assert archived_ids(store) == [ids[2]]  # inline, finished, archived, dropped
    assert claim_all(h) == [ids[0], ids[1], ids[3]]
    missing = h.submit(GetJob(h.request_id(), "000000000003-7"))
    assert type(missing.error).__name__ == "JobNotFound"  # type: ignore[union-attr]


def test_a_job_changed_between_pick_and_attach_stays_inline_with_its_bit_left() -> None:
    h = Harness.started(config=config())
    h.auto = False
    ids = []
    for index in range(4):
        request = h.request_id()
        h.broker.submit(Push(request, b"p%d" % index), h.now)
        h.flush()
        while h.pending_of(WriteObject, "state.json"):
            h.deliver(h.pending_of(WriteObject, "state.json")[0])
        ids.append(h.replies[request].result.job_id)  # type: ignore[union-attr]
    [create] = h.pending_of(WriteObject, SEGMENTS)
    claim = h.request_id()
    h.broker.submit(Claim(claim, "w"), h.now)  # changes the first picked job
    h.flush()
    h.deliver(create)
    h.deliver_all()
    assert h.replies[claim].result.job_id == ids[0]  # type: ignore[union-attr]
    stored = state(h.store)
    [ref] = stored["segments"]  # type: ignore[misc]
    assert ref["left"] == [[0, 1]]
    assert [(job["id"], job["status"]) for job in stored["jobs"]] == [(ids[0], "claimed")]  # type: ignore[attr-defined]
    h.auto = True
    assert claim_all(h) == ids[1:]


def test_a_ref_whose_positions_all_left_is_dropped_by_the_next_write() -> None:
    h = Harness.started(config=config())
    ids = push_ids(h, 4)
    assert claim_all(h) == ids
    stored = state(h.store)
    assert "segments" not in stored
    assert h.store.keys(SEGMENTS) == []  # and deleted once that write landed (stage 2)


# -- the create's outcomes, crashes, successors ----------------------------------------


def _spill_held(outcome: str) -> tuple[Harness, list[str], str]:
    """Four pushes, their spill's create delivered with ``outcome``."""
    h = Harness.started(config=config())
    ids = push_ids(h, 3)
    h.auto = False
    request = h.request_id()
    h.broker.submit(Push(request, b"job-3"), h.now)
    h.flush()
    h.deliver(h.pending_of(WriteObject, "state.json")[0])
    ids.append(h.replies[request].result.job_id)  # type: ignore[union-attr]
    [create] = h.pending_of(WriteObject, SEGMENTS)
    key = h.pending[create].key  # type: ignore[union-attr]
    h.deliver(create, outcome)  # type: ignore[arg-type]
    return h, ids, key


def _successor_serves_once(store: SimStore, ids: list[str], now: float) -> None:
    successor = Harness.started(store, config(), identity="next", now=now)
    assert claim_all(successor) == ids


@pytest.mark.parametrize("outcome", ["ok", "failed", "unknown_lost", "unknown_landed", "late"])
def test_every_create_outcome_then_a_crash_loses_nothing(outcome: str) -> None:
    h, ids, _ = _spill_held(outcome)
    _successor_serves_once(h.store, ids, h.now + 100)


@pytest.mark.parametrize("outcome", ["failed", "unknown_lost", "unknown_landed", "late"])
def test_a_create_that_did_not_say_ok_is_retried_with_the_same_bytes(outcome: str) -> None:
    h, ids, key = _spill_held(outcome)
    if outcome == "late":
        h.deliver_all()
        h.store.land_late()  # lands now: the retry then conflicts and reads it back
    h.auto = True
    h.advance(1.0)
    assert [r["key"] for r in state(h.store)["segments"]] == [key]  # type: ignore[attr-defined]
    assert h.store.keys(SEGMENTS) == [key]
    assert claim_all(h) == ids


def test_a_foreign_object_under_the_key_abandons_the_spill() -> None:
    h = Harness.started(config=config())
    ids = push_ids(h, 3)
    key = f"{SEGMENTS}000001-0000000001.json"
    h.store.put(key, b"somebody else's")
    ids += push_ids(h, 1)
    assert h.store.get(key) == b"somebody else's"
    # Abandoned; the next spill (at once: the jobs are still there) takes a fresh key.
    stats = h.broker.stats()
    assert (stats.spills_abandoned, stats.spills) == (1, 1)
    fresh_key = f"{SEGMENTS}000001-0000000002.json"
    assert [r["key"] for r in state(h.store)["segments"]] == [fresh_key]  # type: ignore[attr-defined]
    _successor_serves_once(h.store, ids, h.now)


def test_a_successor_serves_a_spilled_backlog_exactly_once() -> None:
    h = Harness.started(config=config())
    ids = push_ids(h, 30)
    assert h.broker.stats().segments >= 3
    _successor_serves_once(h.store, ids, h.now)


# -- damaged and missing segments ------------------------------------------------------


def _spilled_store() -> tuple[SimStore, str, list[str]]:
    h = Harness.started(config=config())
    ids = push_ids(h, 4)
    [key] = h.store.keys(SEGMENTS)
    return h.store, key, ids


def test_a_corrupt_segment_fails_the_broker_naming_it_without_a_write() -> None:
    store, key, _ = _spilled_store()
    data = store.get(key)
    assert data is not None
    store.put(key, data.replace(b"am9i", b"Ym9i"))  # same size, another digest
    h = Harness.started(store, config(), identity="b")
    before = store.get("state.json")
    reply = h.claim()
    assert h.broker.phase is Phase.FAILED
    assert isinstance(h.broker.failure, CorruptState)
    assert key in str(h.broker.failure)
    assert isinstance(reply.error, CorruptState)  # type: ignore[union-attr]
    assert store.get("state.json") == before


def test_a_missing_segment_of_our_own_state_is_segment_missing_without_a_write() -> None:
    store, key, _ = _spilled_store()
    del store.objects[key]
    h = Harness.started(store, config(), identity="b")
    before = store.get("state.json")
    reply = h.claim()
    assert isinstance(h.broker.failure, SegmentMissing)
    assert h.broker.failure.grpc_status == "DATA_LOSS"
    assert isinstance(reply.error, SegmentMissing)  # type: ignore[union-attr]
    assert store.get("state.json") == before


def test_a_missing_segment_after_a_takeover_by_another_broker_is_broker_replaced() -> None:
    store, key, _ = _spilled_store()
    h = Harness.started(store, config(), identity="b")
    h.auto = False
    request = h.request_id()
    h.broker.submit(Claim(request, "w"), h.now)
    h.flush()
    [read] = segment_reads(h)
    Harness.started(store, config(), identity="c")  # takes over meanwhile ...
    del store.objects[key]  # ... and (say) dropped and deleted the segment
    h.deliver(read)
    h.deliver_all()
    assert isinstance(h.broker.failure, BrokerReplaced)
    assert isinstance(h.replies[request].error, BrokerReplaced)


# -- opening, schema 2, header-only reads ----------------------------------------------


def test_opening_a_state_with_refs_serves_pushes_before_reading_any_segment() -> None:
    store, _, _ = _spilled_store()
    held = Harness(Broker(config(read_ahead=2), identity="b", incarnation="b-1"), store)
    held.auto = False
    held.broker.start(held.now)
    held.flush()
    request = held.request_id()
    held.broker.submit(Push(request, b"new"), held.now)
    held.flush()
    while request not in held.replies:
        index = next(i for i in range(len(held.pending)) if i not in segment_reads(held))
        held.deliver(index)
    assert held.replies[request].ok
    assert held.broker.stats().segments_loaded == 0
    assert segment_reads(held), "read-ahead was issued beside serving, and is still held"


def test_a_schema_2_state_is_read_and_upgraded_by_the_next_write() -> None:
    store = SimStore()
    job = Job("000000000000-1", 0, JobSpec(b"old", 10.0))
    header = StateHeader(2, 5, Owner("old", "old-1", 1), 1)
    store.put("state.json", encode_state(header, [encode_job(job)]))
    assert state(store)["schema_version"] == 2
    h = Harness.started(store, config(), identity="new")
    assert state(store)["schema_version"] == SCHEMA_VERSION
    assert claim_all(h) == [job.id]


def test_the_header_ends_before_the_refs() -> None:
    store, _, _ = _spilled_store()
    data = store.get("state.json")
    assert data is not None
    cut = data.index(b',"segments":[')
    damaged = data[: cut + 14] + b"not json at all" + data[cut + 14 :]
    assert decode_header(damaged).revision == decode_header(data).revision
    with pytest.raises(CorruptState):
        decode_state(damaged)


def test_a_written_create_is_what_the_ref_names() -> None:
    h = Harness.started(config=config())
    h.auto = False
    for index in range(4):
        h.broker.submit(Push(h.request_id(), b"p%d" % index), h.now)
        h.flush()
        while h.pending_of(WriteObject, "state.json"):
            h.deliver(h.pending_of(WriteObject, "state.json")[0])
    [create] = h.pending_of(WriteObject, SEGMENTS)
    effect = h.pending[create]
    assert isinstance(effect, WriteObject)
    assert effect.expected_version is None  # create-only
    result = h.deliver(create)
    assert isinstance(result, ObjectWritten)
    h.deliver_all()
    [ref] = decode_state(h.store.get("state.json")).segments  # type: ignore[arg-type]
    assert (ref.key, ref.size) == (effect.key, len(effect.data))


def test_a_waiting_claim_whose_job_is_in_a_segment_is_served_once_it_is_read() -> None:
    store, _, ids = _spilled_store()
    h = Harness.started(store, config(), identity="b")
    h.auto = False
    request = h.request_id()
    h.broker.submit(Claim(request, "w", wait=5.0), h.now)
    h.flush()
    assert request not in h.replies
    h.deliver(segment_reads(h)[0])
    h.deliver_all()
    assert h.replies[request].result.job_id == ids[0]  # type: ignore[union-attr]


def test_a_command_whose_segment_cannot_be_read_gets_storage_unavailable_in_time() -> None:
    store, _, ids = _spilled_store()
    h = Harness.started(store, config(stall_timeout=2.0), identity="b")
    h.auto = False
    claim, push = h.request_id(), h.request_id()
    h.broker.submit(Claim(claim, "w"), h.now)
    h.broker.submit(Push(push, b"behind"), h.now)
    h.flush()
    fail_segment_reads_until_answered(h, claim)  # once 2 s passed
    assert type(h.replies[claim].error).__name__ == "StorageUnavailable"
    assert h.broker.phase is Phase.RUNNING
    reads = h.broker.stats().segment_reads
    h.auto = True
    h.deliver_all()
    assert h.replies[push].ok  # the queue moved on
    h.advance(30.0)
    assert h.broker.stats().segment_reads == reads  # nobody needs it now: no more reads
    assert claim_all(h) == [*ids, h.replies[push].result.job_id]  # type: ignore[union-attr]


def test_claim_many_stops_at_the_first_job_whose_segment_is_not_loaded() -> None:
    store = SimStore()
    first = Harness.started(store, config=config())
    ids = push_ids(first, 8)  # two segments of four
    assert first.broker.stats().segments == 2
    h = Harness.started(store, config(), identity="b")
    h.auto = False
    request = h.request_id()
    h.broker.submit(Claim(request, "w", 0.0, ("default",), count=10), h.now)
    h.flush()
    h.deliver(segment_reads(h)[0])  # the first segment only
    while request not in h.replies:
        h.deliver(next(i for i in range(len(h.pending)) if i not in segment_reads(h)))
    taken = [claim.job_id for claim in h.replies[request].result.jobs]  # type: ignore[union-attr]
    assert taken == ids[:4]
    assert segment_reads(h), "it asked for the next segment"


def test_a_spill_also_starts_at_spill_bytes() -> None:
    h = Harness.started(config=config(spill_jobs=1000, spill_bytes=300))
    h.submit(Push(h.request_id(), b"x" * 200))
    assert h.store.keys(SEGMENTS) == []
    h.submit(Push(h.request_id(), b"y" * 200))
    assert len(h.store.keys(SEGMENTS)) == 1
    assert h.broker.stats().untouched == 2


@pytest.mark.parametrize("position", [0, 1], ids=["queued-for-the-read", "applied-at-once"])
def test_a_segment_record_that_fails_decoding_at_claim_fails_the_broker(position: int) -> None:
    # A record the segment's check passes (its digest and its claim-order fields are
    # right) but a Job cannot be made of: found only when a claim takes it. That is
    # the state being corrupt, not the claim being wrong: the broker fails and writes
    # nothing more, instead of answering that one claim and serving on.
    store, key, ids = _spilled_store()
    data = store.get(key)
    assert data is not None
    segment = orjson.loads(data)
    segment["jobs"][position]["attempts"] = -5
    forged = orjson.dumps(segment)
    store.put(key, forged)
    raw = state(store)
    [ref] = raw["segments"]  # type: ignore[misc]
    ref.update(digest=digest_of(forged), bytes=len(forged))
    store.put("state.json", orjson.dumps(raw))
    h = Harness.started(store, config(), identity="b")
    if position == 1:  # the first claim reads the segment; the second applies at once
        first = h.claim()
        assert first is not None
        assert isinstance(first.result, Claimed)
        assert first.result.job_id == ids[0]
        assert h.broker.stats().segments_loaded == 1
    before = store.get("state.json")
    reply = h.claim()
    assert reply is not None
    assert isinstance(reply.error, CorruptState)
    assert h.broker.phase is Phase.FAILED
    assert isinstance(h.broker.failure, CorruptState)
    assert key in str(h.broker.failure)
    later = h.submit(Push(h.request_id(), b"after"))
    assert later is not None
    assert isinstance(later.error, CorruptState)
    assert store.get("state.json") == before
    assert store.get(key) == forged
