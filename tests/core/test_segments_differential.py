"""Segments change where jobs live, never what a client sees: the same commands at the
same times give the same replies with tiny segments as with spilling off (keyed pushes
included: a key of a job spilled into a segment names that job), and a successor then
serves every job that is left exactly once and answers every key as the other would.

Jobs are pushed with delays and run-at times and retried with backoffs, so they spill
into segments with due windows; time passes and the wall clock steps back and forth
(a promoted job stays due, as an inline one does); successors start with their wall
clock behind, inside those windows, beside successors of the broker that never spilled.
"""

from __future__ import annotations

import random
from collections import Counter

import attrs
import pytest

from osqueue_core import (
    BrokerConfig,
    Cancel,
    Claim,
    Claimed,
    ClaimedBatch,
    Complete,
    Fail,
    GetJob,
    Heartbeat,
    NewJob,
    Push,
    PushBatch,
    Pushed,
    Redrive,
    Release,
    Reply,
    RetryPolicy,
    decode_segment,
    decode_state,
    encode_job,
    encode_ref,
    encode_state,
    segment_job,
    untouched_positions,
)
from osqueue_core.job import Job
from osqueue_core.segment_refs import SegmentRef

from .harness import Harness, SimStore

QUEUES = ("q1", "q2", "q3")
#: Zero backoff in q1 (a retried job is ready at once: no due time); q2 and q3 retry
#: after a backoff (their retried jobs spill into segments with due windows).
RETRY = RetryPolicy(base=0.0, cap=0.0, max_attempts=3)
QUEUE_RETRY = {
    "q2": RetryPolicy(base=0.5, cap=1.0, max_attempts=3),
    "q3": RetryPolicy(base=1.0, cap=2.0, max_attempts=3),
}
#: The wall clock both brokers start at (``now`` starts at 1000).
WALL = 1_795_000_000.0
#: (delay, run-at relative to the wall clock) of a push.
TIMINGS = [(None, None)] * 4 + [(0.5, None), (3.0, None), (30.0, None), (None, -5.0), (None, 8.0)]
#: Few keys, so pushes repeat them; remembered for a short while, so a key comes back
#: as a new job after its first one left.
KEYS = ("k1", "k2", "k3", "k4", "k5")
RETENTION = 60.0


def tiny(read_ahead: int, cache: int) -> BrokerConfig:
    return BrokerConfig(
        spill_jobs=3,
        segment_jobs=8,
        read_ahead=read_ahead,
        segment_cache_bytes=cache,
        retry=RETRY,
        queue_retry=QUEUE_RETRY,
        max_dead=5,
        idempotency_retention=RETENTION,
    )


def outcome(reply: Reply | None) -> object:
    assert reply is not None, "every command is answered in the same input here"
    if reply.error is not None:
        return (type(reply.error).__name__, str(reply.error))
    return reply.result


def stored_jobs(store: SimStore) -> dict[str, Job]:
    """Every job of the stored state, inline or untouched in a referenced segment, after
    checking that it is canonical, in seq order, and each job is in one place only."""
    data = store.get("state.json")
    assert data is not None
    decoded = decode_state(data)
    seqs = [job.seq for job in decoded.jobs]
    assert seqs == sorted(seqs)
    refs = b",".join(encode_ref(ref) for ref in decoded.segments)
    assert encode_state(decoded.header, map(encode_job, decoded.jobs), None, refs) == data
    jobs = {job.id: job for job in decoded.jobs}
    places = Counter(list(jobs))
    for ref in decoded.segments:
        segment = store.get(ref.key)
        assert segment is not None
        records = decode_segment(segment, ref).records
        for position in untouched_positions(ref):
            job = segment_job(records[position], ref.key)
            jobs[job.id] = job
            places[job.id] += 1
    assert max(places.values(), default=1) == 1, "a job in two places"
    return jobs


class Twins:
    """The same inputs to a broker with tiny segments and one without segments."""

    def __init__(self, spilling: Harness, plain: Harness) -> None:
        self.spilling = spilling
        self.plain = plain
        self.ids: list[str] = []
        self.claimed: dict[str, str] = {}  # job id -> worker
        self.replies = 0
        #: Keyed pushes answered with a job that is untouched in a segment.
        self.untouched_keys = 0

    @classmethod
    def started(cls, config: BrokerConfig) -> Twins:
        return cls(
            Harness.started(SimStore(), config, identity="seg", wall=WALL),
            Harness.started(SimStore(), plain(config), identity="seg", wall=WALL),
        )

    def successors(self, config: BrokerConfig, wall: float) -> Twins:
        """Brokers that take over both stores, their wall clock at ``wall``."""
        now = self.spilling.now + 1.0
        return Twins(
            Harness.started(self.spilling.store, config, identity="next", now=now, wall=wall),
            Harness.started(self.plain.store, plain(config), identity="next", now=now, wall=wall),
        )

    def drain(self, complete: bool = False) -> list[str]:
        """Claim one at a time until nothing is due: the same jobs, in the same order
        (each completed at once, with ``complete``)."""
        taken = []
        while isinstance(answer := self.both(lambda r: Claim(r, "z", 0.0, QUEUES)), Claimed):
            taken.append(answer.job_id)
            if complete:
                self.both(lambda r: Complete(r, answer.job_id, "z"))  # type: ignore[attr-defined]
        return taken

    def both(self, make: object) -> object:
        answers = []
        for h in (self.spilling, self.plain):
            command = make(h.request_id())  # type: ignore[operator]
            answers.append(outcome(h.submit(command)))
        assert answers[0] == answers[1], f"replies differ for {command!r}"
        self.replies += 1
        return answers[0]

    def advance(self, seconds: float) -> None:
        for h in (self.spilling, self.plain):
            h.advance(seconds)

    def step_wall(self, seconds: float) -> None:
        """The wall clock steps (``now`` does not): seen with the next input."""
        for h in (self.spilling, self.plain):
            assert h.wall is not None
            h.wall += seconds

    def timing(self, rng: random.Random) -> tuple[float | None, float | None]:
        delay, offset = rng.choice(TIMINGS)
        assert self.spilling.wall is not None
        return delay, None if offset is None else self.spilling.wall + offset

    def step(self, rng: random.Random) -> None:
        roll = rng.random()
        if roll < 0.35:
            queue, priority = rng.choice(QUEUES), rng.choice((0, 0, 1, 5))
            payload = b"p%d" % rng.getrandbits(16)
            delay, run_at = self.timing(rng)
            key = rng.choice(KEYS) if rng.random() < 0.4 else None
            answer = self.both(lambda r: Push(r, payload, queue, priority, delay, run_at, key))
            assert isinstance(answer, Pushed)
            self.ids.append(answer.job_id)
            if answer.existing and self.spilling.broker.job(answer.job_id) is None:
                self.untouched_keys += 1
        elif roll < 0.42:
            jobs = tuple(
                NewJob(
                    b"b",
                    rng.choice(QUEUES),
                    rng.choice((0, 2)),
                    *self.timing(rng),
                    key=rng.choice((None, *KEYS)),
                )
                for _ in range(4)
            )
            answer = self.both(lambda r: PushBatch(r, jobs))
            self.ids.extend(answer.job_ids)  # type: ignore[attr-defined]
        elif roll < 0.65:
            queues = tuple(rng.sample(QUEUES, rng.randint(1, 3)))
            worker = rng.choice(("w1", "w2"))
            answer = self.both(lambda r: Claim(r, worker, 0.0, queues))
            if isinstance(answer, Claimed):
                self.claimed[answer.job_id] = worker
        elif roll < 0.78 and self.claimed:
            job_id = rng.choice(sorted(self.claimed))
            worker = self.claimed.pop(job_id)
            kind = rng.choice((Complete, Fail, Release, Heartbeat))
            if kind is Heartbeat:
                self.claimed[job_id] = worker
                self.both(lambda r: Heartbeat(r, job_id, worker))
            elif kind is Fail:
                requeue = rng.random() < 0.8
                self.both(lambda r: Fail(r, job_id, worker, "boom", requeue))
            else:
                self.both(lambda r: kind(r, job_id, worker))
        elif roll < 0.86 and self.ids:
            job_id = rng.choice(self.ids)
            kind = rng.choice((Cancel, GetJob, GetJob))
            self.both(lambda r: kind(r, job_id))
        elif roll < 0.88 and self.ids:
            job_id = rng.choice(self.ids)
            self.both(lambda r: Redrive(r, (job_id,)))
        elif roll < 0.92:
            self.step_wall(rng.choice((-40.0, -5.0, -0.5, 0.5, 5.0)))
        else:
            self.advance(rng.choice((0.01, 0.5, 5.0, 40.0)))

    def same_counts(self) -> None:
        """Per queue: the same ready and delayed jobs; the oldest ready-since never
        younger with segments (an over-estimate of the age at most)."""
        counts = [
            {q.queue: q for q in h.broker.stats().queues} for h in (self.spilling, self.plain)
        ]
        assert {q: (c.ready, c.delayed) for q, c in counts[0].items()} == {
            q: (c.ready, c.delayed) for q, c in counts[1].items()
        }
        for queue, plain in counts[1].items():
            since = counts[0][queue].oldest_ready_since
            assert (since is None) == (plain.oldest_ready_since is None)
            assert since is None or since <= plain.oldest_ready_since  # type: ignore[operator]


def plain(config: BrokerConfig) -> BrokerConfig:
    """``config`` without spilling: the twin that keeps every job inline."""
    return attrs.evolve(config, spill_jobs=None)


@pytest.mark.parametrize("seed", range(12))
def test_same_replies_with_tiny_segments_as_without(seed: int) -> None:
    rng = random.Random(seed)
    twins = Twins.started(tiny(read_ahead=seed % 3, cache=400 * (1 + seed % 4)))
    for step in range(400):
        twins.step(rng)
        if step % 50 == 49:
            # Same jobs, same records, wherever they live.
            assert stored_jobs(twins.spilling.store) == stored_jobs(twins.plain.store)
        twins.same_counts()
    stats = [h.broker.stats() for h in (twins.spilling, twins.plain)]
    assert (stats[0].ready, stats[0].delayed) == (stats[1].ready, stats[1].delayed)
    assert stats[0].spills > 0, "the run never spilled: it tests nothing"
    assert stats[0].segment_reads > 0
    assert any(ref.due for ref in refs(twins.spilling.store)), "no segment had a due window"
    assert twins.untouched_keys > 0, "no key of an untouched job was pushed again"
    # Drain both (no wait, one at a time), claim order included.
    twins.drain()


@pytest.mark.parametrize("seed", range(4))
def test_claim_many_takes_the_same_jobs_in_the_same_order(seed: int) -> None:
    """Claim many stops early only at a segment that is not loaded; with reads
    delivered at once and read-ahead, the union of what claims take is the same."""
    rng = random.Random(100 + seed)
    twins = Twins.started(tiny(read_ahead=2, cache=100_000))
    for _ in range(60):
        queue, priority = rng.choice(QUEUES), rng.choice((0, 1, 5))
        twins.both(lambda r, q=queue, p=priority: Push(r, b"x", q, p))  # type: ignore[misc]
    taken: list[list[str]] = [[], []]
    for index, h in enumerate((twins.spilling, twins.plain)):
        while True:
            reply = h.submit(Claim(h.request_id(), "w", 0.0, QUEUES, count=7))
            assert reply is not None
            if not isinstance(reply.result, ClaimedBatch):
                break
            taken[index].extend(c.job_id for c in reply.result.jobs)
    assert taken[0] == taken[1]
    assert len(taken[0]) == 60


@pytest.mark.parametrize("seed", range(8))
def test_successors_serve_the_same_jobs_whatever_their_wall_clock(seed: int) -> None:
    """A successor whose wall clock is behind (inside the due windows of the segments,
    or before all of them) serves exactly what a successor of the broker that never
    spilled serves, then as time passes, the same jobs as they fall due."""
    rng = random.Random(200 + seed)
    twins = Twins.started(tiny(read_ahead=1, cache=800))
    for _ in range(250):
        twins.step(rng)
    assert twins.spilling.wall is not None
    behind = (0.0, 2.0, 20.0, 3600.0)[seed % 4]
    config = tiny(read_ahead=seed % 3, cache=800)
    heirs = twins.successors(config, twins.spilling.wall - behind)
    stats = heirs.spilling.broker.stats()
    assert stats.segments > 0
    heirs.same_counts()
    taken = heirs.drain(complete=True)
    # (Jobs the predecessors held are retried after a backoff once their leases run out.)
    for seconds in (1.0, 5.0, 30.0, 3600.0, 3600.0, 5.0):
        heirs.advance(seconds)
        heirs.same_counts()
        taken += heirs.drain(complete=True)
    assert taken, "nothing was left to serve: it tests nothing"
    left = heirs.spilling.broker.stats()
    assert (left.ready, left.delayed, left.untouched) == (0, 0, 0)


def refs(store: SimStore) -> list[SegmentRef]:
    data = store.get("state.json")
    assert data is not None
    return decode_state(data).segments


@pytest.mark.parametrize("seed", range(6))
def test_a_successor_answers_every_key_as_a_broker_that_never_spilled(seed: int) -> None:
    """Its key index is read back from the segments' headers (keyed pushes wait for
    it): a key of a job still in the state names that job, any other makes a new one."""
    rng = random.Random(300 + seed)
    twins = Twins.started(tiny(read_ahead=seed % 2, cache=800))
    for _ in range(250):
        twins.step(rng)
    config = tiny(read_ahead=seed % 2, cache=800)
    heirs = twins.successors(config, twins.spilling.wall or WALL)
    keyed = heirs.spilling.broker.stats().untouched_keyed
    found = 0
    for queue in QUEUES:
        for key in KEYS:
            answer = heirs.both(lambda r, q=queue, k=key: Push(r, b"again", q, key=k))  # type: ignore[misc]
            assert isinstance(answer, Pushed)
            found += answer.existing
    assert keyed > 0, "no keyed job was untouched at the takeover: it tests nothing"
    assert found >= keyed
