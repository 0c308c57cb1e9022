"""Core bugs the model test (tests/core/test_model.py) found in the job lifecycle
rules, each reduced to its smallest example and kept as a regression test.

All of them are fixed.
"""

from __future__ import annotations

from osqueue_core import (
    Broker,
    BrokerConfig,
    Claim,
    Claimed,
    Phase,
    Purge,
    Push,
    Release,
    RetryPolicy,
    WriteObject,
)

from .harness import Harness, SimStore

CONFIG = BrokerConfig(
    heartbeat_timeout=10.0, retry=RetryPolicy(base=0.5, max_attempts=1), dead_retention=60.0
)


def test_a_takeover_expires_old_dead_letters_at_once() -> None:
    """A successor takes over a state holding a dead letter older than
    ``dead_retention``. Expiry runs at the start of each input, before the takeover
    lands, so nothing archives the old dead letter until the next input:
    ``next_deadline()`` returns ``now`` itself. Every other due thing is done within the
    input that makes it due, and ``next_deadline()`` is otherwise always in the future.
    (Likely fix: expire once more when a takeover lands.)"""
    store = SimStore()
    first = Harness.started(store, CONFIG)
    job_id = first.push().result.job_id  # type: ignore[union-attr]
    first.claim()
    first.fail(job_id, requeue=False)  # a dead letter, finished at 1000
    first.broker.stop(first.now)
    first.flush()
    assert first.broker.phase is Phase.STOPPED

    successor = Harness.started(store, CONFIG, identity="broker-b", now=first.now + 61)
    assert successor.broker.phase is Phase.RUNNING
    assert successor.broker.stats().dead == 0  # past its retention: archived at once
    deadline = successor.broker.next_deadline()
    assert deadline is None or deadline > successor.now, (deadline, successor.now)


def test_a_takeover_promotes_jobs_that_fell_due_while_it_was_written() -> None:
    """The same cause as above, seen from a delayed job: a takeover loads the jobs when
    it issues its write, and a job that falls due before the write lands stays
    delayed until the next input (``next_deadline()`` is ``now`` meanwhile)."""
    store = SimStore()
    first = Harness.started(store, CONFIG)
    first.submit(Push(first.request_id(), b"job", delay=0.5))
    first.broker.stop(first.now)
    first.flush()
    assert first.broker.phase is Phase.STOPPED

    successor = Harness(
        Broker(CONFIG, identity="broker-b", incarnation="broker-b-1"),
        store,
        now=first.now,
        auto=False,
    )
    successor.broker.start(successor.now)
    successor.flush()
    while successor.pending:
        effect = successor.pending[0]
        if isinstance(effect, WriteObject) and effect.key == CONFIG.state_key:
            successor.now += 1.0  # the takeover write lands after the job fell due
        successor.deliver(0)
    assert successor.broker.phase is Phase.RUNNING
    deadline = successor.broker.next_deadline()
    assert deadline is None or deadline > successor.now, (deadline, successor.now)
    assert successor.broker.stats().delayed == 0


def test_a_release_is_answered_before_the_claim_it_serves() -> None:
    """A release hands its job to a claim that was waiting for one. ``_release``
    requeues the job (serving the waiting claim, whose reply is held first) and only
    then holds the ``Released`` reply: the new holder hears of the job before the old
    one hears it was given back. Replies otherwise come out in the order their commands
    took effect (pushes were fixed for this: "push replies held before waiting claims
    are served"). With one worker id for both, a client sees "claimed J", then
    "released J", and may drop the job it now holds."""
    h = Harness.started(config=CONFIG)
    job_id = h.push().result.job_id  # type: ignore[union-attr]
    h.claim("w1")
    waiting = Claim(h.request_id(), "w1", wait=5.0)
    h.submit(waiting)
    release = Release(h.request_id(), job_id, "w1")
    h.submit(release)
    served = h.replies[waiting.request_id].result
    assert isinstance(served, Claimed)
    assert served.job_id == job_id  # the release served the waiting claim
    order = list(h.replies)  # in the order the broker gave them
    assert order.index(release.request_id) < order.index(waiting.request_id)


def test_a_dead_letter_past_its_retention_is_archived_once_it_is_the_oldest() -> None:
    """Dead letters used to leave in death order, expiry stopping at the first one not
    yet too old. With the wall clock stepped back between two deaths, the later death
    has the earlier ``finished_at``: it was past its retention while hidden behind the
    older one, and once an action removed the older one (a purge, a redrive, an
    eviction past ``max_dead``) it was due with nothing to archive it until the next
    input: ``next_deadline()`` was ``now``. Now they leave by ``finished_at``."""
    h = Harness.started(config=CONFIG)
    h.wall = 1_795_000_000.0
    first = h.push(b"first").result.job_id  # type: ignore[union-attr]
    h.claim()
    h.fail(first, requeue=False)  # dead at W
    h.wall -= 86_400.0  # the wall clock steps back a day...
    second = h.push(b"second").result.job_id  # type: ignore[union-attr]
    h.claim()
    h.fail(second, requeue=False)  # dead at W - 1 day
    h.wall += 86_400.0 + 1  # ... and forward again: the second is past its retention
    h.advance(0.0)
    # Dead letters leave in wall-clock order of death: the second goes at once,
    # though it died after the first.
    assert h.broker.stats().dead == 1
    h.auto = False  # look before anything is delivered (a lingering write, say)
    h.submit(Purge(h.request_id(), (first,)))
    deadline = h.broker.next_deadline()
    assert deadline is None or deadline > h.now, (deadline, h.now)
