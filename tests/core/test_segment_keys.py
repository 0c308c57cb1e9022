"""Segments, stage 2: idempotency-keyed jobs spill, and a keyed push finds them.

Each segment carries its keyed jobs' (hash, position) pairs (its ``key_index``); the
broker keeps one index over every ref's untouched keyed jobs, read back after a
takeover (keyed pushes wait for it, nothing else does). A push whose key hash is there
waits for that segment and compares the real key, so it answers as a broker that never
spills would, also when two keys share a hash.
"""

from __future__ import annotations

import base64
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from osqueue_core import (
    Broker,
    BrokerConfig,
    Cancel,
    Cancelled,
    Claim,
    Claimed,
    CorruptState,
    NewJob,
    Phase,
    Push,
    PushBatch,
    Pushed,
    PushedBatch,
    ReadVersion,
    SegmentMissing,
    StorageUnavailable,
    WriteObject,
    decode_state,
    digest_of,
    key_index,
)
from osqueue_core.key_index import (
    PAIR,
    KeyIndex,
    decode_pairs,
    key_hash,
    key_pairs,
    location,
)
from osqueue_core.segment_codec import decode_segment, decode_segment_keys, encode_segment
from osqueue_core.segment_reads import KEY_INDEX_READS
from osqueue_core.segment_refs import SegmentGroup, SegmentRef

from .harness import Harness, SimStore, archived_ids
from .test_segments import (
    SEGMENTS,
    applied_after_one_read,
    config,
    fail_segment_reads_until_answered,
    segment_reads,
)


def push(h: Harness, key: str | None, queue: str = "default") -> Pushed:
    reply = h.submit(Push(h.request_id(), b"p-" + (key or "").encode(), queue, key=key))
    assert reply is not None
    assert isinstance(reply.result, Pushed), reply
    return reply.result


def keyed_backlog(
    settings: BrokerConfig | None = None, keys: Sequence[str] = "abcd"
) -> tuple[Harness, list[str]]:
    """A broker that pushed one job per key (and spilled them, unless ``settings`` say
    not to)."""
    settings = settings or config()
    h = Harness.started(SimStore(), settings)
    ids = [push(h, key).job_id for key in keys]
    stats = h.broker.stats()
    spilled = len(keys) if settings.spills else 0
    assert (stats.untouched, stats.untouched_keyed) == (spilled, spilled)
    return h, ids


def held_successor(store: SimStore, **overrides: object) -> Harness:
    """A broker that has taken ``store`` over, its segment reads (the key index's
    included) not delivered."""
    h = Harness(Broker(config(**overrides), identity="b", incarnation="b-1"), store)
    h.auto = False
    h.broker.start(h.now)
    h.flush()
    while h.broker.phase is Phase.STARTING:
        h.deliver(next(i for i in range(len(h.pending)) if i not in segment_reads(h)))
    return h


def settle_state_ops(h: Harness) -> None:
    """Deliver everything but segment reads."""
    while others := [i for i in range(len(h.pending)) if i not in segment_reads(h)]:
        h.deliver(others[0])


# -- the format ------------------------------------------------------------------------

DOC = (Path(__file__).parents[2] / "docs" / "state-format.md").read_text()


def _documented(after: str) -> Any:
    start = DOC.index("```json", DOC.index(after)) + len("```json")
    return orjson.loads(DOC[start : DOC.index("```", start)])


def test_the_documented_segment_and_its_key_index_are_what_the_codec_writes() -> None:
    raw = _documented("`segments/000002-0000000001.json`, holding")
    data = orjson.dumps(raw)
    ref_raw = _documented("### A reference")
    groups = tuple(SegmentGroup(*group) for group in ref_raw["groups"])
    ref = SegmentRef(
        ref_raw["key"],
        ref_raw["digest"],
        ref_raw["bytes"],
        ref_raw["jobs"],
        tuple(ref_raw["seqs"]),  # type: ignore[arg-type]
        groups,
        tuple(ref_raw["due"]),  # type: ignore[arg-type]
        ref_raw["keyed"],
        tuple(tuple(run) for run in ref_raw["left"]),  # type: ignore[arg-type]
    )
    keyed = [
        (position, job["born"].get("queue", "default"), job["born"]["key"])
        for position, job in enumerate(raw["jobs"])
        if "key" in job["born"]
    ]
    pairs = key_pairs(keyed)
    assert pairs == [(key_hash("default", "img-2"), 1)]
    assert base64.b64encode(PAIR.pack(*pairs[0])).decode() == raw["key_index"]
    fragments = [orjson.dumps(job) for job in raw["jobs"]]
    seqs = [job["seq"] for job in raw["jobs"]]
    assert encode_segment(ref.key, groups, seqs, fragments, pairs) == data
    assert decode_segment(data, ref).keys == pairs
    assert decode_segment_keys(data, ref) == pairs


def _one_keyed_segment(pairs: Callable[[list[tuple[int, int]]], Any]) -> tuple[bytes, SegmentRef]:
    """A segment of two jobs, the second keyed, whose key index is ``pairs(real)``."""
    key = "segments/000001-0000000001.json"
    records = [
        {"id": "000000000000-1", "seq": 0, "born": {"data": "eA==", "created_at": 1.0}},
        {"id": "000000000001-1", "seq": 1, "born": {"data": "eA==", "created_at": 1.0, "key": "k"}},
    ]
    real = [(key_hash("default", "k"), 1)]
    groups = (SegmentGroup("default", 2, 0, 0, 1.0),)
    data = encode_segment(key, groups, [0, 1], [orjson.dumps(r) for r in records])
    head = orjson.loads(data)
    head.pop("jobs")
    index = pairs(real)
    if index is not None:
        head["key_index"] = index
    data = orjson.dumps({**head, "jobs": records})
    return data, SegmentRef(key, digest_of(data), len(data), 2, (0, 1), groups, keyed=1)


def _packed(pairs: list[tuple[int, int]]) -> str:
    return base64.b64encode(b"".join(PAIR.pack(*pair) for pair in pairs)).decode()


@pytest.mark.parametrize(
    ("index", "header_too"),
    [
        (lambda real: None, True),  # keyed 1 and no key index
        (lambda real: _packed([*real, (1, 0)]), True),  # more pairs than keyed jobs
        (lambda real: _packed([(real[0][0], 2)]), True),  # a position outside the segment
        (lambda real: _packed(real)[:-4], True),  # cut short
        (lambda real: "!" * 16, True),  # not base64
        (lambda real: 12345, True),  # not a string
        (lambda real: _packed([(real[0][0] ^ 1, 1)]), False),  # a hash of another key
        (lambda real: _packed([(real[0][0], 0)]), False),  # the wrong position
    ],
)
def test_a_key_index_that_does_not_hold_is_corrupt(index: Any, header_too: bool) -> None:
    data, ref = _one_keyed_segment(index)
    with pytest.raises(CorruptState, match="segment"):
        decode_segment(data, ref)
    if header_too:
        with pytest.raises(CorruptState, match="segment"):
            decode_segment_keys(data, ref)
    else:
        # The header alone cannot tell: the whole segment is checked when loaded.
        assert len(decode_segment_keys(data, ref)) == 1


def test_decode_pairs_refuses_unsorted_and_repeated_positions() -> None:
    pack = b"".join(PAIR.pack(*pair) for pair in [(5, 1), (3, 0)])
    with pytest.raises(ValueError, match="sorted"):
        decode_pairs(pack, 2, 2)
    pack = b"".join(PAIR.pack(*pair) for pair in [(3, 1), (5, 1)])
    with pytest.raises(ValueError, match="twice"):
        decode_pairs(pack, 2, 2)
    assert decode_pairs(b"".join(PAIR.pack(*p) for p in [(3, 1), (3, 2)]), 2, 3) == [
        (3, 1),
        (3, 2),
    ]


def test_a_reference_larger_than_any_segment_is_corrupt() -> None:
    h, _ = keyed_backlog()
    state = orjson.loads(h.store.get("state.json"))  # type: ignore[arg-type]
    ref = state["segments"][0]
    ref["jobs"] = ref["groups"][0][1] = 1 << 21
    with pytest.raises(CorruptState, match="jobs"):
        decode_state(orjson.dumps(state))


# -- the index in memory ---------------------------------------------------------------


def test_the_index_finds_removes_and_keeps_apart_keys_of_one_bucket_and_one_hash() -> None:
    index = KeyIndex()
    assert index.find_key("q", "a") == []
    # Two real keys whose hashes share the top 12 bits (one bucket), found by trying.
    first = key_hash("q", "k0")
    other = next(f"k{n}" for n in range(1, 100_000) if key_hash("q", f"k{n}") >> 52 == first >> 52)
    index.add([(first, location(1, 5)), (key_hash("q", other), location(2, 7))])
    index.add([(first, location(3, 0))])  # another key with k0's very hash
    assert sorted(index.find_key("q", "k0")) == [location(1, 5), location(3, 0)]
    assert index.find_key("q", other) == [location(2, 7)]
    assert index.find_key("other-queue", "k0") == []
    index.remove_key("q", "k0", location(3, 0))
    assert index.find_key("q", "k0") == [location(1, 5)]
    assert len(index) == 2
    with pytest.raises(ValueError, match="not in array"):
        index.remove_key("q", "k0", location(3, 0))


def test_the_index_costs_about_17_bytes_a_key() -> None:
    """docs/architecture.md, "Stage 2 as built", quotes this at a million keys."""
    keys = 100_000
    tracemalloc.start()
    index = KeyIndex()
    for n in range(keys):
        index.add([(key_hash("default", f"order-{n}"), location(n // 4096, n % 4096))])
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(index) == keys
    # 16 bytes of payload; at this size the arrays' slack and 8,192 array headers add
    # ~10 (a dict of hashes would be ~110).
    assert used / keys < 32


# -- spilling keyed jobs, and pushes that find them ------------------------------------


def test_keyed_jobs_spill_with_their_key_index_and_the_ref_counts_them() -> None:
    h = Harness.started(config=config())
    ids = [push(h, key).job_id for key in ("a", None, "b", "c")]
    state = orjson.loads(h.store.get("state.json"))  # type: ignore[arg-type]
    assert state["jobs"] == []
    [ref] = state["segments"]
    assert ref["keyed"] == 3
    segment = orjson.loads(h.store.get(ref["key"]))  # type: ignore[arg-type]
    assert [job["id"] for job in segment["jobs"]] == ids
    expected = key_pairs([(0, "default", "a"), (2, "default", "b"), (3, "default", "c")])
    assert segment["key_index"] == _packed(expected)
    assert h.broker.stats().untouched_keyed == 3


def test_a_push_of_a_key_no_untouched_job_has_reads_no_segment() -> None:
    h, _ = keyed_backlog()
    reads, writes = h.broker.stats().segment_reads, h.writes
    pushed = push(h, "new")
    assert not pushed.existing
    assert h.broker.stats().segment_reads == reads
    assert h.writes == writes + 1


def test_a_push_of_a_spilled_key_waits_for_its_segment_and_names_the_job() -> None:
    h, ids = keyed_backlog()
    before = h.store.get("state.json")
    reply = applied_after_one_read(h, lambda request: Push(request, b"again", key="c"))
    assert reply.result == Pushed(ids[2], True)
    assert h.store.get("state.json") == before  # nothing new to write
    assert h.broker.stats().untouched_keyed == 4


def test_a_claimed_keyed_job_leaves_the_index_and_its_key_is_inline_again() -> None:
    h, ids = keyed_backlog()
    reply = h.claim()
    assert reply is not None
    assert isinstance(reply.result, Claimed)
    assert reply.result.job_id == ids[0]
    assert h.broker.stats().untouched_keyed == 3
    reads = h.broker.stats().segment_reads
    assert push(h, "a") == Pushed(ids[0], True)
    assert h.broker.stats().segment_reads == reads  # found inline, no read


def test_a_cancelled_untouched_keyed_job_is_remembered_after_its_archive() -> None:
    h, ids = keyed_backlog()
    reply = h.submit(Cancel(h.request_id(), ids[1]))
    assert reply is not None
    assert reply.result == Cancelled(ids[1], True)
    assert archived_ids(h.store) == [ids[1]]
    assert h.broker.stats().untouched_keyed == 3
    assert push(h, "b") == Pushed(ids[1], True)  # a remembered key now


def test_a_batch_mixes_spilled_new_and_repeated_keys_as_a_broker_that_never_spills() -> None:
    items = (
        NewJob(b"1", key="b"),
        NewJob(b"2", key="z"),
        b"3",
        NewJob(b"4", key="z"),
        NewJob(b"5", "mail", key="b"),
    )
    answers = []
    for spill_jobs in (4, None):
        h, ids = keyed_backlog(config(spill_jobs=spill_jobs))
        reply = h.submit(PushBatch(h.request_id(), items))
        assert reply is not None
        assert isinstance(reply.result, PushedBatch)
        assert reply.result.job_ids[0] == ids[1]
        answers.append(reply.result)
    assert answers[0] == answers[1]
    assert answers[0].existing == (True, False, False, True, False)


# -- after a takeover: the key index is read, header only ------------------------------


def test_after_a_takeover_only_keyed_pushes_wait_for_the_key_index() -> None:
    first, ids = keyed_backlog()
    first.submit(Push(first.request_id(), b"plain"))  # one more, inline
    h = held_successor(first.store)
    assert not h.broker.stats().key_index_complete
    [index] = segment_reads(h)  # the keyed segment's, issued at once
    header_read = h.pending[index]  # (its index moves as the state operations go)
    plain, keyed, claim = h.request_id(), h.request_id(), h.request_id()
    h.broker.submit(Push(plain, b"unkeyed"), h.now)
    h.flush()
    settle_state_ops(h)
    assert h.replies[plain].ok  # not held by the key index
    h.broker.submit(Push(keyed, b"new key", key="new"), h.now)
    h.flush()
    settle_state_ops(h)
    assert keyed not in h.replies
    h.deliver(h.pending.index(header_read))
    settle_state_ops(h)
    assert h.replies[keyed].result.existing is False  # type: ignore[union-attr]
    stats = h.broker.stats()
    assert (stats.key_index_complete, stats.untouched_keyed) == (True, 4)
    assert stats.segments_loaded == 0  # the header was parsed, not the records
    h.broker.submit(Claim(claim, "w"), h.now)
    h.flush()
    h.deliver_all()
    assert h.replies[claim].result.job_id == ids[0]  # type: ignore[union-attr]


def test_after_a_takeover_a_push_of_a_spilled_key_names_the_job() -> None:
    first, ids = keyed_backlog(keys="abcdefgh")
    successor = Harness.started(first.store, config(), identity="b")
    for key, job_id in zip("abcdefgh", ids, strict=True):
        assert push(successor, key) == Pushed(job_id, True)
    assert push(successor, "i").existing is False


def test_key_index_reads_are_capped_and_the_next_goes_out_as_one_lands() -> None:
    first, _ = keyed_backlog(keys=[f"k{n}" for n in range(36)])  # 9 segments
    h = held_successor(first.store)
    reads = segment_reads(h)
    assert len(reads) == KEY_INDEX_READS == 8
    h.deliver(reads[0])
    assert len(segment_reads(h)) == 8  # the ninth
    while segment_reads(h):
        h.deliver(segment_reads(h)[0])
    stats = h.broker.stats()
    assert (stats.key_index_complete, stats.untouched_keyed, stats.segment_reads) == (True, 36, 9)


def test_a_takeover_indexes_only_keys_still_untouched() -> None:
    """A keyed job that left its segment before the takeover (claimed, completed,
    archived, and its remembered key expired since) is not found by its key any more:
    a push of that key makes a new job, as with a broker that never spilled."""
    first, ids = keyed_backlog(config(idempotency_retention=1.0))
    claimed = first.claim()
    assert claimed is not None
    assert first.complete(ids[0], "w1") is not None
    assert archived_ids(first.store) == [ids[0]]
    successor = Harness.started(first.store, config(idempotency_retention=1.0), identity="b")
    assert successor.broker.stats().untouched_keyed == 3
    successor.advance(5.0)  # the remembered key of job "a" expires
    again = push(successor, "a")
    assert again.existing is False
    assert again.job_id != ids[0]
    assert push(successor, "b") == Pushed(ids[1], True)


def test_a_claim_that_loads_a_keyed_segment_completes_the_index_without_its_header_read() -> None:
    first, ids = keyed_backlog()
    h = held_successor(first.store)
    [header_read] = segment_reads(h)
    claim = h.request_id()
    h.broker.submit(Claim(claim, "w"), h.now)
    h.flush()
    assert segment_reads(h) == [header_read]  # the same key: one read at a time
    h.deliver(header_read)  # now demanded: loaded whole, its keys indexed
    h.deliver_all()
    assert h.replies[claim].result.job_id == ids[0]  # type: ignore[union-attr]
    stats = h.broker.stats()
    assert (stats.key_index_complete, stats.untouched_keyed) == (True, 3)
    assert stats.segment_reads == 1


def test_a_keyed_push_whose_key_index_cannot_be_read_gets_storage_unavailable_in_time() -> None:
    first, _ = keyed_backlog()
    h = held_successor(first.store, stall_timeout=2.0)
    keyed, plain = h.request_id(), h.request_id()
    h.broker.submit(Push(keyed, b"k", key="zz"), h.now)
    h.broker.submit(Push(plain, b"behind"), h.now)
    h.flush()
    fail_segment_reads_until_answered(h, keyed)  # once 2 s passed
    assert isinstance(h.replies[keyed].error, StorageUnavailable)
    settle_state_ops(h)
    assert h.replies[plain].ok  # the queue moved on
    assert h.broker.phase is Phase.RUNNING
    assert not h.broker.stats().key_index_complete
    h.auto = True
    h.advance(10.0)  # its backoff
    assert h.broker.stats().key_index_complete  # it kept trying


def test_a_keyed_segment_missing_at_takeover_is_segment_missing_without_a_write() -> None:
    first, _ = keyed_backlog()
    [key] = first.store.keys(SEGMENTS)
    del first.store.objects[key]
    h = held_successor(first.store)
    before = h.store.get("state.json")
    h.deliver(segment_reads(h)[0])  # absent: is the state still ours?
    h.deliver_all()
    assert isinstance(h.broker.failure, SegmentMissing)
    assert key in str(h.broker.failure)
    assert h.store.get("state.json") == before


def _tamper_key_index(store: SimStore, change: Callable[[str], str]) -> None:
    """Rewrite the first keyed segment's key index and its reference to match, as a
    broker with a bug would have written them."""
    state = orjson.loads(store.get("state.json"))  # type: ignore[arg-type]
    ref = next(ref for ref in state["segments"] if ref.get("keyed"))
    segment = orjson.loads(store.get(ref["key"]))  # type: ignore[arg-type]
    segment["key_index"] = change(segment["key_index"])
    data = orjson.dumps(segment)
    store.put(ref["key"], data)
    ref["digest"], ref["bytes"] = digest_of(data), len(data)
    store.put("state.json", orjson.dumps(state))


def _swap_first_pairs(text: str) -> str:
    packed = base64.b64decode(text)
    return base64.b64encode(packed[12:24] + packed[:12] + packed[24:]).decode()


def _other_hash(text: str) -> str:
    pairs = sorted(
        (hashed ^ 1 if position == 0 else hashed, position)
        for hashed, position in PAIR.iter_unpack(base64.b64decode(text))
    )
    return base64.b64encode(b"".join(PAIR.pack(*pair) for pair in pairs)).decode()


def test_an_unsorted_key_index_read_at_takeover_fails_the_broker_without_a_write() -> None:
    first, _ = keyed_backlog()
    _tamper_key_index(first.store, _swap_first_pairs)
    h = held_successor(first.store)
    before = h.store.get("state.json")  # its takeover's: nothing after the bad read writes
    h.deliver(segment_reads(h)[0])
    assert h.broker.phase is Phase.FAILED
    assert isinstance(h.broker.failure, CorruptState)
    assert "key_index" in str(h.broker.failure)
    h.deliver_all()
    assert h.store.get("state.json") == before


def test_a_key_index_naming_another_key_passes_the_header_and_fails_the_load() -> None:
    first, _ = keyed_backlog()
    _tamper_key_index(first.store, _other_hash)
    h = Harness.started(first.store, config(), identity="b")  # the header read passed
    assert h.broker.stats().key_index_complete
    reply = h.claim()  # loads the segment whole
    assert reply is not None
    assert isinstance(reply.error, CorruptState)
    assert "key_index does not match" in str(h.broker.failure)


# -- a forced hash collision -----------------------------------------------------------


def test_keys_sharing_a_hash_are_never_merged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key hashes alike (a test seam: the one function that hashes keys): each
    push of a new key must read the segments holding the others, compare, and make a
    new job; a repeated key still names its job, before and after a takeover."""
    monkeypatch.setattr(key_index, "key_hash", lambda queue, key: 42)
    plain = Harness.started(SimStore(), config(spill_jobs=None))
    h = Harness.started(SimStore(), config())
    answers: list[list[Pushed]] = [[], []]
    keys = ("a", "b", "c", "d", "e", "b", "f", "g", "h", "a", "i")
    for key in keys:
        for index, broker in enumerate((h, plain)):
            answers[index].append(push(broker, key))
    assert answers[0] == answers[1]
    made = {key: answer.job_id for key, answer in zip(keys, answers[0], strict=True)}
    assert [a.existing for a in answers[0]].count(True) == 2
    stats = h.broker.stats()
    assert stats.untouched_keyed == stats.untouched == 8
    assert stats.segment_reads > 0  # every new key after the first spill read to compare
    segment = orjson.loads(h.store.get(h.store.keys(SEGMENTS)[0]))  # type: ignore[arg-type]
    assert {h for h, _ in PAIR.iter_unpack(base64.b64decode(segment["key_index"]))} == {42}
    successor = Harness.started(h.store, config(), identity="b")
    for key, job_id in made.items():
        assert push(successor, key) == Pushed(job_id, True)
    assert push(successor, "zz").existing is False


# -- job_id_seq: custom ids spill too ----------------------------------------------------


def custom_id(epoch: int, seq: int) -> str:
    return f"job-{epoch}-{seq}"


def custom_seq(job_id: str) -> int | None:
    prefix, epoch, seq = job_id.split("-")  # raises on ids it did not make
    return int(seq) if prefix == "job" and custom_id(int(epoch), int(seq)) == job_id else None


def test_job_id_seq_is_checked_against_the_factory() -> None:
    assert not config(job_id_factory=custom_id).spills
    assert config(job_id_factory=custom_id, job_id_seq=custom_seq).spills
    with pytest.raises(ValueError, match="inverse"):
        config(job_id_factory=custom_id, job_id_seq=lambda job_id: 0)
    with pytest.raises(ValueError, match="function"):
        config(job_id_factory=custom_id, job_id_seq="seq")
    assert config().seq_of("000000000012-3") == 12
    bad = config(job_id_factory=custom_id, job_id_seq=custom_seq)
    assert bad.seq_of("not-an-id-at-all") is None  # it raised: not one of its ids


def test_a_custom_factory_with_its_inverse_spills_and_finds_jobs_by_id() -> None:
    custom = config(job_id_factory=custom_id, job_id_seq=custom_seq)
    h = Harness.started(SimStore(), custom)
    ids = [push(h, None).job_id for _ in range(4)]
    assert ids[0] == "job-1-0"
    assert h.broker.stats().untouched == 4
    successor = Harness.started(h.store, custom, identity="b")
    reply = successor.submit(Cancel(successor.request_id(), ids[2]))
    assert reply is not None
    assert reply.result == Cancelled(ids[2], True)
    for garbage in ("job-1-x", "x", "job-9-2", "000000000002-1"):
        missing = successor.submit(Cancel(successor.request_id(), garbage))
        assert type(missing.error).__name__ == "JobNotFound"  # type: ignore[union-attr]
    claimed = [successor.claim().result.job_id for _ in range(3)]  # type: ignore[union-attr]
    assert claimed == [ids[0], ids[1], ids[3]]


def test_jobs_whose_id_the_inverse_does_not_give_back_stay_inline() -> None:
    def partial(job_id: str) -> int | None:
        seq = custom_seq(job_id)
        return None if seq is not None and seq % 7 == 3 else seq

    h = Harness.started(SimStore(), config(job_id_factory=custom_id, job_id_seq=partial))
    ids = [push(h, None).job_id for _ in range(5)]
    stored = decode_state(h.store.get("state.json"))  # type: ignore[arg-type]
    assert [job.id for job in stored.jobs] == [ids[3]]  # seq 3 is not found by id
    assert h.broker.stats().untouched == 4


def test_a_push_while_its_keyed_job_is_being_spilled_finds_it_inline() -> None:
    """Until its segment is known durable and attached, a picked keyed job is inline:
    a push of its key is answered from the inline jobs, then the key moves to the
    index, and the state holds only the reference."""
    h = Harness.started(config=config())
    h.auto = False
    for key in "abcd":
        request = h.request_id()
        h.broker.submit(Push(request, b"x", key=key), h.now)
        h.flush()
        while state_writes := h.pending_of(WriteObject, "state.json"):
            h.deliver(state_writes[0])
        while confirms := h.pending_of(ReadVersion):
            h.deliver(confirms[0])
    [create] = h.pending_of(WriteObject, SEGMENTS)
    assert h.broker.stats().untouched_keyed == 0  # not attached yet: keys are inline
    duplicate = h.request_id()
    h.broker.submit(Push(duplicate, b"y", key="b"), h.now)
    h.flush()
    h.deliver(create)
    h.deliver_all()
    assert h.replies[duplicate].result.existing  # type: ignore[union-attr]
    assert h.broker.stats().untouched_keyed == 4
    assert decode_state(h.store.get("state.json")).jobs == []  # type: ignore[arg-type]
