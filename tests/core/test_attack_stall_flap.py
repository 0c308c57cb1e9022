"""Attack: a stall caused by a hung operation ends as soon as that operation *fails*:
``failing_since`` only starts counting at the failure, so the slot no longer looks
stalled. New requests are accepted again and wait another ``stall_timeout`` in silence
although storage has not worked once (docs: "When an operation succeeds the stall ends
by itself")."""

from __future__ import annotations

from osqueue_core import BrokerConfig

from .harness import Harness

CONFIG = BrokerConfig(stall_timeout=5, retry_initial=1, retry_max=1)


def test_a_hung_operation_that_then_fails_keeps_the_broker_stalled() -> None:
    h = Harness.started(config=CONFIG)
    h.auto = False
    h.push(b"a")
    h.advance(5)  # the write hangs: stalled
    assert h.broker.stats().stalled
    h.deliver(0, "failed")  # ... and finally fails: storage still does not work
    assert h.broker.stats().stalled, "the stall ended on a failure"
    reply = h.push(b"b")
    assert reply is not None, "a new push is accepted and waits in silence again"
