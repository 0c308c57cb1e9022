"""Attack: a write that keeps conflicting while the state's revision stays ours (the
store refuses the precondition but nobody else changes the content: a runtime whose
read-back version token is not accepted by the conditional put, a rogue process
rewriting the same bytes, a store answering 412 spuriously). Each round is "resolved"
by a successful read, so storage never counts as failing: the broker re-sends with
backoff forever and never answers the held requests, not even StorageUnavailable."""

from __future__ import annotations

from osqueue_core import BrokerConfig, WriteObject

from .harness import Harness

CONFIG = BrokerConfig(stall_timeout=5, retry_initial=0.5, retry_max=1)


def test_held_requests_are_answered_when_writes_keep_conflicting() -> None:
    h = Harness.started(config=CONFIG)
    h.auto = False
    h.push(b"a")
    for _ in range(120):  # a minute
        while h.pending:
            conflict = isinstance(h.pending[0], WriteObject)
            h.deliver(0, "conflict" if conflict else "ok")
        h.advance(0.5)
    assert 1 in h.replies, (
        f"no answer after 60 s; stats: {h.broker.stats().writes} writes, "
        f"{h.broker.stats().resolves} resolves, stalled={h.broker.stats().stalled}"
    )


def test_a_marker_create_that_conflicts_on_an_absent_key_backs_off() -> None:
    """Reserving an epoch: create conflicts, the marker reads back absent, create again
    at once. Neither step counts as a failure or waits for a backoff, so a store that
    answers this way (a delete racing the create, an inconsistent backend) keeps the
    broker issuing operations with no time passing at all."""
    from osqueue_core import Broker

    from .harness import SimStore

    store = SimStore()
    Harness.started(store, identity="a")
    h = Harness(Broker(CONFIG, identity="b", incarnation="b-1"), store)
    h.auto = False
    h.broker.start(h.now)
    h.flush()
    issued = 0
    while h.pending and issued < 1000:
        effect = h.pending[0]
        marker = isinstance(effect, WriteObject) and effect.key.startswith("epochs/")
        h.deliver(0, "conflict" if marker else "ok")
        issued += 1
    assert issued < 1000, "1000 storage operations without any time passing"
