"""Attack: an owner that writes steadily but less than twice per ``takeover_check``
never counts as busy, so it never reads the takeover request; a challenger whose
read-and-write cycle is longer than the owner's write interval loses every round and
gives up. On GCS (about one write per second per object, 500-700 ms per conditional
write) an owner at its rate limit writes about once a second: exactly this case."""

from __future__ import annotations

from osqueue_core import Broker, BrokerConfig, Phase, WriteObject

from .harness import Harness, SimStore

CONFIG = BrokerConfig(takeover_check=1.0, takeover_yield_max=10, takeover_timeout=30)


def test_a_steady_owner_writing_once_per_1_2_s_lets_a_challenger_in() -> None:
    store = SimStore()
    owner = Harness.started(store, identity="owner", config=CONFIG)
    challenger = Harness(Broker(CONFIG, identity="challenger", incarnation="challenger-1"), store)
    challenger.auto = False
    challenger.broker.start(challenger.now)
    challenger.flush()
    cycle = 1.2  # the challenger's read + write takes 1.2 s (a large state, GCS)
    for _ in range(60):
        # Deliver everything up to the takeover write at once (read, marker, request).
        while challenger.pending and not challenger.pending_of(WriteObject, "state.json"):
            challenger.deliver(0)
        if challenger.broker.phase is not Phase.STARTING:
            break
        # During the challenger's cycle the owner commits one write (a push every 1.2 s).
        owner.now = challenger.now + cycle / 2
        owner.push()  # committed at once, or held while the owner pauses
        challenger.now += cycle
        challenger.deliver(challenger.pending_of(WriteObject, "state.json")[0])
    assert "takeover.json" in store.objects, "the challenger did ask the owner to pause"
    assert challenger.broker.phase is Phase.RUNNING, (
        f"owner paused {owner.broker.stats().yields} times; challenger: {challenger.broker.failure}"
    )
