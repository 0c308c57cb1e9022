"""Attack: memory that grows with the number of requests over time rather than with
the limits (``max_waiting_claims``...)."""

from __future__ import annotations

from osqueue_core import BrokerConfig, Claim

from .harness import Harness


def test_cancelled_waiting_claims_do_not_pile_up_in_the_deadline_heap() -> None:
    """WaitingClaims deletes lazily but, unlike JobTable's heaps, never compacts: a
    stale entry stays until it reaches the top. One long-lived waiting claim with an
    earlier deadline keeps every later, cancelled (or served) claim's entry alive for
    up to MAX_CLAIM_WAIT."""
    h = Harness.started(config=BrokerConfig(max_waiting_claims=2))
    h.claim("patient", wait=3000)  # stays waiting, earliest deadline
    for _ in range(20_000):  # clients that long-poll and give up (cancel_claim)
        claim = Claim(h.request_id(), "impatient", wait=3600)
        h.broker.submit(claim, h.now)
        h.broker.cancel_claim(claim.request_id, h.now)
        h.broker.take_effects()
        h.now += 0.01
    waiters = h.broker._rules.waiters
    assert len(waiters) == 1
    heap = len(waiters._deadlines)
    assert heap <= 2 * len(waiters) + 64, f"{heap} heap entries for {len(waiters)} waiting claim"


def test_a_reused_request_id_is_not_expired_by_its_predecessor_s_deadline() -> None:
    """Request ids need only be unique among outstanding requests, but the deadline heap
    keys stale entries by request id: a served claim's old entry expires a new claim
    that reuses its id."""
    from osqueue_core import Claimed, NothingToClaim, Push

    # A lease long enough that the first claim's job does not come back meanwhile.
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=60))
    first = Claim("rid-7", "w1", wait=5)
    h.submit(first)
    h.submit(Push("p", b"a"))  # serves it
    assert isinstance(h.replies.pop("rid-7").result, Claimed)
    second = Claim("rid-7", "w1", wait=30)  # the id is free again
    h.submit(second)
    h.advance(5)  # the first claim's deadline, long before the second one's
    reply = h.replies.get("rid-7")
    assert reply is None, f"answered {reply.result} after 5 s of a 30 s wait"
    h.advance(25)
    assert h.replies["rid-7"].result == NothingToClaim()


def test_a_successor_does_not_keep_the_state_it_took_over_forever() -> None:
    """Takeover keeps the decoded state (every job read, payloads included) and the
    encoded takeover write (the whole state's bytes) for the broker's lifetime: after
    every inherited job is finished, archived and dropped, they are still in memory."""
    import gc
    import weakref

    from .harness import SimStore

    store = SimStore()
    old = Harness.started(store, identity="old")
    ids = [old.push(bytes(10_000)).result.job_id for _ in range(50)]  # type: ignore[union-attr]
    h = Harness.started(store, identity="new")
    inherited = weakref.ref(h.broker.job(ids[0]))
    for _ in ids:
        job_id = h.claim("w").result.job_id  # type: ignore[union-attr]
        h.complete(job_id, "w")
    h.advance(1)
    assert h.broker.stats().ready == h.broker.stats().finished_pending_archive == 0
    assert len(h.broker._rules.table) == 0
    gc.collect()
    if inherited() is not None:
        holders = [type(r).__name__ for r in gc.get_referrers(inherited())]
        takeover = h.broker._commit.takeover
        pending = takeover._pending
        size = len(pending.data) if pending is not None else 0
        raise AssertionError(
            f"an inherited job is still referenced (by {holders}); the takeover also "
            f"keeps its {size}-byte write"
        )
