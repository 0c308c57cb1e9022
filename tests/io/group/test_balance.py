"""The balance rules of a group member: quotas, holds, paced releases."""

from __future__ import annotations

from osqueue_io.group.balance import Balancer, Decision, quota


def test_quotas_add_up_to_the_queues_and_differ_by_one_at_most() -> None:
    for queues in range(1, 40):
        for live in range(1, 12):
            quotas = [quota(queues, live, rank) for rank in range(live)]
            assert sum(quotas) == queues
            assert max(quotas) - min(quotas) <= 1
            assert quotas == sorted(quotas, reverse=True), "the first in slot order get more"
    assert quota(6, 4, 0) == quota(6, 4, 1) == 2
    assert quota(6, 4, 2) == quota(6, 4, 3) == 1
    assert quota(6, 0, 0) == 6, "alone (not joined yet): everything"


def test_a_member_holds_at_its_quota_and_releases_above_it_one_at_a_time() -> None:
    b = Balancer(queues=6, lease=2.0)
    assert b.decide(0, [], live=3, rank=0, now=0) == Decision(hold=False)
    assert b.decide(1, ["a"], live=3, rank=0, now=0) == Decision(hold=False)
    assert b.decide(2, ["a", "b"], live=3, rank=0, now=0) == Decision(hold=True)
    # Alone it created all six; two others joined: it gives away the newest first.
    six = ["a", "b", "c", "d", "e", "f"]
    assert b.decide(6, six, live=3, rank=0, now=10) == Decision(True, "f")
    assert b.pending == "f"
    assert b.decide(5, six[:5], live=3, rank=0, now=10.5) == Decision(True), "paced"
    b.taken("e")
    assert b.pending == "f", "another queue's owner changes nothing"
    b.taken("f")
    assert b.decide(5, six[:5], live=3, rank=0, now=10.6) == Decision(True, "e")
    # Nobody takes "e": a lease later the next release goes anyway.
    assert b.decide(4, six[:4], live=3, rank=0, now=12.5) == Decision(True)
    assert b.decide(4, six[:4], live=3, rank=0, now=12.6) == Decision(True, "d")
    assert b.releases == 3


def test_a_queue_being_taken_over_counts_but_is_not_released() -> None:
    b = Balancer(queues=4, lease=2.0)
    # Three owned, one of them still taking over (not serving): above the quota of 2,
    # and only a served queue can be given away.
    assert b.decide(3, ["a", "b"], live=2, rank=0, now=0) == Decision(True, "b")
    assert b.decide(3, [], live=2, rank=1, now=5) == Decision(True)
