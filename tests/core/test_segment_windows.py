"""Segments, stage 2: jobs with a due time spill into segments of their own, whose due
window keeps them from being claimed early, by this broker or by a successor whose wall
clock is behind (docs/architecture.md, "Delayed jobs" and "Stage 2 as built")."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from osqueue_core import (
    Broker,
    BrokerConfig,
    Cancel,
    Cancelled,
    Claim,
    Claimed,
    CorruptState,
    Fail,
    NothingToClaim,
    Phase,
    Push,
    ReadObject,
    Reply,
    RetryPolicy,
    digest_of,
)
from osqueue_core.limits import MAX_COUNTER, MAX_PRIORITY
from osqueue_core.segment_windows import READ_AHEAD_SECONDS, pack, unpack

from .harness import Harness, SimStore

SEGMENTS = "segments/"
#: The wall clock the brokers start at (``now`` starts at 1000).
WALL = 1_795_000_000.0


def config(**overrides: object) -> BrokerConfig:
    settings: dict[str, object] = {"spill_jobs": 4, "segment_jobs": 8, "read_ahead": 0}
    settings.update(overrides)
    return BrokerConfig(**settings)  # type: ignore[arg-type]


def started(store: SimStore | None = None, wall: float = WALL, **overrides: object) -> Harness:
    return Harness.started(store, config(**overrides), wall=wall, identity=f"b{wall}")


def push(h: Harness, payload: bytes = b"job", **fields: object) -> str:
    reply = h.submit(Push(h.request_id(), payload, **fields))  # type: ignore[arg-type]
    assert reply is not None
    assert reply.ok
    return reply.result.job_id  # type: ignore[union-attr]


def claim(h: Harness, queues: tuple[str, ...] = ("default",)) -> str | None:
    reply = h.submit(Claim(h.request_id(), "w", 0.0, queues))
    assert reply is not None
    if isinstance(reply.result, NothingToClaim):
        return None
    assert isinstance(reply.result, Claimed)
    return reply.result.job_id


def refs(store: SimStore) -> list[dict[str, object]]:
    data = store.get("state.json")
    assert data is not None
    found: list[dict[str, object]] = orjson.loads(data).get("segments", [])
    return found


def segment_reads(h: Harness) -> list[int]:
    return h.pending_of(ReadObject, SEGMENTS)


def test_jobs_with_a_due_time_spill_apart_and_their_ref_carries_the_range() -> None:
    h = started()
    plain = [push(h), push(h, b"past", run_at=WALL - 60)]  # a past run-at is not stored
    later = [push(h, delay=10.0), push(h, run_at=WALL + 30.0)]
    untimed, timed = refs(h.store)
    assert "due" not in untimed
    assert (untimed["jobs"], timed["jobs"]) == (2, 2)
    assert timed["due"] == [WALL + 10.0, WALL + 30.0]
    assert orjson.loads(h.store.get("state.json"))["jobs"] == []  # type: ignore[arg-type]
    stats = h.broker.stats()
    assert (stats.ready, stats.delayed, stats.untouched, stats.segments) == (2, 2, 4, 2)
    [queue] = stats.queues
    assert (queue.ready, queue.delayed) == (2, 2)
    assert [claim(h), claim(h), claim(h)] == [*plain, None]
    h.advance(10.0)
    assert claim(h) == later[0]


def test_an_untouched_job_is_claimable_at_its_due_time_never_before() -> None:
    h = started()
    ids = [push(h, delay=delay) for delay in (10.0, 20.0, 20.0, 30.0)]
    assert h.broker.stats().untouched == 4
    assert claim(h) is None
    # The next promotion is what the runtime is asked to wake up for.
    assert h.broker.next_deadline() == h.now + 10.0
    h.advance(9.5)
    assert claim(h) is None
    assert h.broker.next_deadline() == h.now + 0.5
    h.advance(0.5)
    assert claim(h) == ids[0]
    assert claim(h) is None
    h.advance(10.0)
    assert [claim(h), claim(h), claim(h)] == [ids[1], ids[2], None]
    h.advance(10.0)
    assert claim(h) == ids[3]
    stats = h.broker.stats()
    assert (stats.untouched, stats.delayed, stats.segments) == (0, 0, 0)


def test_a_waiting_claim_is_served_when_an_untouched_job_falls_due() -> None:
    h = started()
    ids = [push(h, delay=5.0) for _ in range(4)]
    request = h.request_id()
    h.submit(Claim(request, "w", 30.0))
    assert request not in h.replies
    deadline = h.broker.next_deadline()
    assert deadline == h.now + 5.0
    h.now = deadline
    h.wall = WALL + 5.0
    h.broker.tick(h.now, h.wall)
    h.flush()
    reply = h.replies[request]
    assert isinstance(reply.result, Claimed)
    assert reply.result.job_id == ids[0]


def test_promoted_cursor_and_inline_jobs_are_claimed_by_priority_then_fifo() -> None:
    h = started()
    low = [push(h) for _ in range(4)]  # a segment of due jobs
    high = [push(h, priority=5, delay=1.0), push(h, delay=1.0)]
    high += [push(h, priority=5, delay=1.0), push(h, priority=9, delay=3.0)]  # spilled
    inline = push(h, priority=5)
    assert h.broker.stats().untouched == 8
    h.advance(1.0)
    assert [claim(h) for _ in range(4)] == [high[0], high[2], inline, low[0]]
    h.advance(2.0)  # the window closes: its last job joins the cursors
    assert [claim(h) for _ in range(5)] == [high[3], *low[1:], high[1]]
    assert claim(h) is None


def test_a_successor_whose_clock_is_behind_a_due_range_waits_for_its_own_clock() -> None:
    store = SimStore()
    first = started(store)
    ids = [push(first, run_at=WALL + 1.0) for _ in range(4)]
    first.advance(5.0)
    assert claim(first) == ids[0]  # due for the broker that saw its time
    successor = started(store, wall=WALL + 0.5)  # a clock behind the range
    assert claim(successor) is None
    stats = successor.broker.stats()
    assert (stats.ready, stats.delayed, stats.segment_reads) == (0, 3, 0)  # nothing read
    successor.advance(0.5)
    assert claim(successor) == ids[1]
    assert successor.broker.stats().segment_reads == 1


def test_a_successor_inside_a_due_range_reads_the_segment_and_serves_only_what_is_due() -> None:
    store = SimStore()
    first = started(store)
    ids = [push(first, run_at=WALL + at) for at in (1.0, 2.0, 3.0, 4.0)]
    successor = started(store, wall=WALL + 2.5)
    # The window has begun: read at once (nothing asked for it), then exact.
    assert successor.broker.stats().segment_reads == 1
    stats = successor.broker.stats()
    assert (stats.ready, stats.delayed) == (2, 2)
    assert [claim(successor), claim(successor), claim(successor)] == [*ids[:2], None]
    successor.advance(1.5)
    assert [claim(successor), claim(successor)] == ids[2:]


def test_a_claim_waits_for_a_begun_window_whose_job_may_be_better() -> None:
    store = SimStore()
    first = started(store)
    due = [push(first, run_at=WALL + at, priority=3) for at in (1.0, 1.0, 1.0, 9.0)]
    successor = Harness(Broker(config(), identity="b", incarnation="b-1"), store, wall=WALL + 2)
    successor.auto = False
    successor.broker.start(successor.now, successor.wall)
    successor.flush()
    inline = held_until(successor, Push(successor.request_id(), b"inline"))
    assert inline is not None
    [read] = segment_reads(successor)  # the window has begun: read at once
    request = successor.request_id()
    successor.broker.submit(Claim(request, "w"), successor.now, successor.wall)
    successor.flush()
    assert request not in successor.replies  # its best candidate may be in the window
    successor.deliver(read)
    successor.deliver_all()
    assert successor.replies[request].result.job_id == due[0]  # type: ignore[union-attr]


def held_until(h: Harness, command: Push) -> Reply | None:
    """Submit ``command`` and deliver every effect but segment reads until answered."""
    h.broker.submit(command, h.now, h.wall)
    h.flush()
    while command.request_id not in h.replies:
        h.deliver(next(i for i in range(len(h.pending)) if i not in segment_reads(h)))
    return h.replies[command.request_id]


def test_a_window_is_read_ahead_before_it_begins_and_never_before() -> None:
    store = SimStore()
    first = started(store)
    ids = [push(first, run_at=WALL + 60.0) for _ in range(4)]
    successor = started(store, read_ahead=1)
    assert successor.broker.stats().segment_reads == 0
    deadline = successor.broker.next_deadline()
    assert deadline == successor.now + 60.0 - READ_AHEAD_SECONDS
    successor.advance(60.0 - READ_AHEAD_SECONDS)
    assert successor.broker.stats().segment_reads == 1
    assert claim(successor) is None
    successor.advance(READ_AHEAD_SECONDS)
    assert claim(successor) == ids[0]
    assert successor.broker.stats().segment_reads == 1  # no read when it fell due


def test_what_fell_due_stays_due_when_the_wall_clock_steps_back() -> None:
    h = started()
    ids = [push(h, delay=5.0) for _ in range(4)]
    h.advance(6.0)
    h.wall = WALL  # stepped back before the due range: promoted jobs stay due ...
    assert claim(h) == ids[0]
    inline = push(h, delay=5.0)
    assert claim(h) == ids[1]
    assert h.broker.stats().delayed == 1  # (... as inline ones do: the new one waits)
    successor = started(h.store, wall=WALL)  # ... but a successor judges by its clock
    assert claim(successor) is None
    successor.advance(5.0)
    assert [claim(successor), claim(successor), claim(successor)] == [*ids[2:], inline]


def test_a_retried_job_spills_with_its_backoff_and_waits_for_it() -> None:
    retry = RetryPolicy(base=8.0, cap=8.0, max_attempts=3)
    h = started(retry=retry)
    first = push(h)
    assert claim(h) == first
    h.submit(Fail(h.request_id(), first, "w", "boom", True))
    others = [push(h) for _ in range(3)]
    untimed, timed = refs(h.store)
    assert (untimed["jobs"], timed["jobs"]) == (3, 1)
    assert claim(h) == others[0]
    assert [claim(h), claim(h), claim(h)] == [*others[1:], None]
    h.advance(8.0)
    assert claim(h) == first


def test_cancelling_an_untouched_delayed_job_takes_it_out_of_the_counts() -> None:
    h = started()
    ids = [push(h, delay=5.0) for _ in range(4)]
    reply = h.submit(Cancel(h.request_id(), ids[1]))
    assert reply is not None
    assert reply.result == Cancelled(ids[1], True)
    assert h.broker.stats().delayed == 3
    h.advance(5.0)
    assert [claim(h), claim(h), claim(h), claim(h)] == [ids[0], ids[2], ids[3], None]


def test_the_oldest_ready_since_of_promoted_jobs_is_their_due_time() -> None:
    h = started()
    [push(h, delay=delay) for delay in (3.0, 5.0, 5.0, 9.0)]
    h.advance(6.0)
    [queue] = h.broker.stats().queues
    assert (queue.ready, queue.delayed, queue.oldest_ready_since) == (3, 1, WALL + 3.0)


def test_a_segment_whose_records_do_not_match_its_due_range_is_corrupt() -> None:
    store = SimStore()
    first = started(store)
    [push(first, run_at=WALL + at) for at in (1.0, 2.0, 3.0, 4.0)]
    data = store.get("state.json")
    assert data is not None
    state = orjson.loads(data)
    # The ref says its window closes later than its records do.
    state["segments"][0]["due"] = [WALL + 1.0, WALL + 9.0]
    store.put("state.json", orjson.dumps(state))
    successor = started(store, wall=WALL + 2.0)
    assert successor.broker.phase is Phase.FAILED
    assert isinstance(successor.broker.failure, CorruptState)
    assert "due range" in str(successor.broker.failure)


def test_a_due_time_that_is_not_a_number_is_corrupt() -> None:
    store = SimStore()
    first = started(store)
    [push(first, run_at=WALL + at) for at in (1.0, 2.0, 3.0, 4.0)]
    [ref] = refs(store)
    key = str(ref["key"])
    segment = store.get(key)
    assert segment is not None
    raw = orjson.loads(segment)
    raw["jobs"][0]["born"]["run_at"] = "soon"
    damaged = orjson.dumps(raw)
    store.put(key, damaged)
    state = orjson.loads(store.get("state.json"))  # type: ignore[arg-type]
    state["segments"][0].update(bytes=len(damaged), digest=digest_of(damaged))
    store.put("state.json", orjson.dumps(state))
    successor = started(store, wall=WALL + 2.0)  # in its window: read at once
    assert isinstance(successor.broker.failure, CorruptState)
    assert "not a number" in str(successor.broker.failure)


@given(
    st.lists(
        st.tuples(
            st.integers(-MAX_PRIORITY, MAX_PRIORITY),
            st.integers(0, MAX_COUNTER),
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**32 - 1),
        ),
        min_size=2,
        max_size=2,
    )
)
def test_a_promoted_job_packs_into_one_int_that_sorts_like_its_claim_key(
    jobs: list[tuple[int, int, int, int]],
) -> None:
    keys = [pack(*job) for job in jobs]
    assert [unpack(key) for key in keys] == jobs
    (a, b), (c, d) = ((-p, s) for p, s, _, _ in jobs)
    if (a, b) != (c, d):
        assert (keys[0] < keys[1]) == ((a, b) < (c, d))
