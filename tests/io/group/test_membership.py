"""Member records in a real store (the local filesystem backend): joining, renewing,
leaving, and a member taken for dead that comes back. Time is each member's own clock,
moved by hand."""

from __future__ import annotations

import attrs
import pytest

from osqueue_io.group.members import MemberRecord, decode_member, group_digest, member_key
from osqueue_io.group.membership import Membership
from osqueue_io.storage import LocalFileStore

pytestmark = pytest.mark.anyio

LEASE = 3.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def member(store: LocalFileStore, name: str, clock: Clock) -> Membership:
    record = MemberRecord(name, f"{name}-incarnation", f"{name}:9090", LEASE)
    return Membership(store, record, poll=0.25, clock=clock)


async def two_joined(store: LocalFileStore) -> tuple[Clock, Membership, Membership]:
    """Members a and b, joined in that order, on one clock."""
    clock = Clock()
    a, b = member(store, "a", clock), member(store, "b", clock)
    assert await a.join()
    assert await b.join()
    return clock, a, b


async def test_members_join_in_the_lowest_free_slots_and_see_each_other(
    local_store: LocalFileStore,
) -> None:
    assert member(local_store, "a", Clock()).standing() == (1, 0), "not joined: alone"
    _, a, b = await two_joined(local_store)
    assert (a.slot, b.slot) == (0, 1)
    await a.poll()
    assert a.standing() == (2, 0)
    assert b.standing() == (2, 1)
    stored = await local_store.read(member_key(1))
    assert stored is not None
    assert decode_member(stored.data) == b.record


async def test_renewals_keep_a_member_live_and_silence_for_a_lease_does_not(
    local_store: LocalFileStore,
) -> None:
    clock, a, b = await two_joined(local_store)
    await a.poll()
    for _ in range(6):  # two leases, b renewing every lease / 3
        clock.now += LEASE / 3
        await b.renew()
        await a.poll()
        assert a.standing() == (2, 0)
    assert b.renewals == 6
    clock.now += LEASE  # b is silent (dead, paused, partitioned)
    await a.poll()
    assert a.standing() == (1, 0)


async def test_a_clean_leave_counts_at_once_and_frees_the_slot(
    local_store: LocalFileStore,
) -> None:
    clock, a, b = await two_joined(local_store)
    await b.leave()
    await a.poll()
    assert a.standing() == (1, 0), "no lease to wait for"
    c = member(local_store, "c", clock)
    assert await c.join()
    assert c.slot == 1, "the left slot is reused"


async def test_a_member_taken_for_dead_finds_its_slot_taken_and_joins_again(
    local_store: LocalFileStore,
) -> None:
    clock = Clock()
    a, b, c = (member(local_store, name, clock) for name in "abc")
    await a.join()
    await b.join()
    await c.poll()  # c watches b's slot from now on ...
    clock.now += LEASE  # ... b is paused for a lease; a renews
    await a.renew()
    assert await c.join()
    assert c.slot == 1, "b's slot: silent for a lease by c's clock"
    await b.renew()  # b resumes: its conditional write finds c's record
    assert b.rejoins == 1
    assert b.slot == 2
    stored = await local_store.read(member_key(1))
    assert stored is not None
    assert decode_member(stored.data).identity == "c", "b never overwrote c"
    await a.poll()
    assert a.standing() == (3, 0)


async def test_a_slot_holding_garbage_is_never_live_and_reused_after_a_lease(
    local_store: LocalFileStore,
) -> None:
    clock = Clock()
    await local_store.create(member_key(0), b"{not a record")
    a = member(local_store, "a", clock)
    await a.join()
    assert a.slot == 1, "an unreadable slot is not free until watched for a lease"
    assert a.standing() == (1, 0)
    b = member(local_store, "b", clock)
    await b.poll()
    clock.now += LEASE
    assert await b.join()
    assert b.slot == 0


async def test_a_member_running_another_list_of_queues_is_reported(
    local_store: LocalFileStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    a = member(local_store, "a", clock)
    a.record = attrs.evolve(a.record, group=group_digest(["x", "y"]))
    b = member(local_store, "b", clock)
    b.record = attrs.evolve(b.record, group=group_digest(["x", "y", "z"]))
    await a.join()
    await b.join()
    assert "member a (slot 0) runs another list of queues" in caplog.text
    await a.poll()
    assert "member b (slot 1) runs another list of queues" in caplog.text
    assert a.standing() == (2, 0), "still a member: only the balance may suffer"
