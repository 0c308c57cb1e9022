"""Two group members in one process (real gRPC on 127.0.0.1, the local filesystem
store): what a member answers for each RPC, and how the group client routes.

The members split four queues 2/2. A client pinned to one member's address (no
discovery) sees each answer as it is: served, ``NotOwner`` naming the other member,
or ``InvalidArgument``; a group client (``storage`` + ``group``) routes every call.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import attrs
import pytest

from osqueue_core import (
    BrokerConfig,
    InvalidArgument,
    JobNotFound,
    NewJob,
    NotOwner,
    decode_header,
)
from osqueue_io import RemoteQueue, Worker
from osqueue_io.group.layout import state_key
from osqueue_io.group.server import GroupServer
from osqueue_io.storage import LocalFileStore

pytestmark = pytest.mark.anyio

QUEUES = ["a", "b", "c", "d"]
CONFIG = BrokerConfig(owner_lease=1.0, standby_poll=0.25, heartbeat_timeout=5.0)


@attrs.define
class Group:
    store: LocalFileStore
    members: dict[str, GroupServer]
    #: queue -> the identity of its owner, once balanced.
    owners: dict[str, str] = attrs.Factory(dict)

    def address(self, identity: str) -> str:
        address = self.members[identity].address
        assert address is not None
        return address

    def owned_by(self, identity: str) -> list[str]:
        return [queue for queue, owner in self.owners.items() if owner == identity]


async def stored_owners(store: LocalFileStore) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for queue in QUEUES:
        stored = await store.read(state_key(queue))
        owner = None if stored is None else decode_header(stored.data).owner
        found[queue] = None if owner is None or owner.released else owner.identity
    return found


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[Group]:
    store = LocalFileStore(tmp_path / "group")
    members = {
        name: GroupServer(store, QUEUES, CONFIG, host="127.0.0.1", port=0, identity=name)
        for name in ("m1", "m2")
    }
    async with anyio.create_task_group() as running:
        for member in members.values():
            running.start_soon(partial(member.run, handle_signals=False))
        result = Group(store, members)
        with anyio.fail_after(30):
            while True:
                found = await stored_owners(store)
                counts = collections.Counter(found.values())
                if None not in counts and sorted(counts.values()) == [2, 2]:
                    break
                await anyio.sleep(0.05)  # the members balance on their own
        result.owners = {queue: owner for queue, owner in found.items() if owner}
        with anyio.fail_after(30):
            # ... and each member's standbys have read who owns their queue.
            while any(  # noqa: ASYNC110 (polling the members)
                member.slots[queue].not_owner().new_identity != owner
                for member in members.values()
                for queue, owner in result.owners.items()
                if owner != member.identity
            ):
                await anyio.sleep(0.05)
        yield result
        for member in members.values():
            member.stop()


async def test_a_member_serves_its_queues_and_names_the_owner_of_the_others(
    group: Group,
) -> None:
    mine, theirs = group.owned_by("m1"), group.owned_by("m2")
    async with Worker(group.address("m1"), timeout=5) as direct:
        job_id = await direct.push(b"x", queue=mine[0])
        assert job_id.startswith(f"{mine[0]}/")
        with pytest.raises(NotOwner) as refused:
            await direct.push(b"x", queue=theirs[0])
        assert refused.value.new_identity == "m2"
        assert refused.value.new_address == group.address("m2")
        with pytest.raises(InvalidArgument, match="not one of this group's queues"):
            await direct.push(b"x", queue="elsewhere")
        with pytest.raises(InvalidArgument, match="names one queue"):
            await direct.push_batch([NewJob(b"1", mine[0]), NewJob(b"2", mine[1])])
        for bad in ("000000000001-1", "nowhere/000000000001-1"):
            with pytest.raises(InvalidArgument):
                await direct.get(bad)
        with pytest.raises(NotOwner):
            await direct.get(f"{theirs[0]}/000000000000-1")
        # A claim over both of its queues is served here, one over theirs is not.
        await direct.push(b"y", queue=mine[1])
        claimed = await direct.claim_many(5, queues=mine)
        assert sorted(job.queue for job in claimed) == sorted(mine)
        with pytest.raises(NotOwner):
            await direct.claim(queues=[mine[0], theirs[0]])
        # CompleteBatch: each item answered by its queue's broker here.
        outcomes = await direct.connection.complete_batch(
            [(claimed[0].id, direct.worker_id, None), (f"{theirs[0]}/000000000000-1", "w", None)]
        )
        assert outcomes[0] is None
        assert isinstance(outcomes[1], NotOwner)
        with pytest.raises(InvalidArgument, match="names one queue"):
            await direct.dead_letters()
        assert (await direct.dead_letters(queue=mine[0])).jobs == ()
        stats = await direct.stats()
        assert stats.identity == "m1"
        assert {info.queue for info in stats.queues} <= set(mine)
        assert stats.claimed == 1


async def test_the_group_client_routes_every_call_to_its_queues_owner(group: Group) -> None:
    async with RemoteQueue(None, bytes, storage=group.store, group=QUEUES, timeout=5) as q:
        ids = await q.connection.push_batch([NewJob(b"%d" % n, QUEUES[n % 4]) for n in range(8)])
        assert [job_id.split("/")[0] for job_id in ids.job_ids] == QUEUES * 2, "in order"
        # One claim over every queue: two members, asked in turn.
        claimed = await q.claim_many(8, queues=QUEUES)
        assert len(claimed) >= 2
        while len(claimed) < 8:
            claimed.extend(await q.claim_many(8, queues=QUEUES))
        assert sorted(job.id for job in claimed) == sorted(ids.job_ids)
        assert await q.complete_many(claimed[:4]) == [None] * 4
        for job in claimed[4:]:
            await q.fail(job, "boom", retry=False)
        dead = await q.dead_letters(limit=3)
        assert len(dead) == 3
        rest = await q.dead_letters(limit=10, after=dead[-1].id)
        assert sorted(job.id for job in dead + rest) == sorted(job.id for job in claimed[4:])
        one_per_queue = {job.queue: job.id for job in claimed[4:]}
        assert len(one_per_queue) > 1
        with pytest.raises(InvalidArgument, match="ids of one queue"):
            await q.redrive(list(one_per_queue.values()))
        by_queue = [job for job in claimed[4:] if job.queue == claimed[4].queue]
        assert await q.redrive([job.id for job in by_queue]) == [job.id for job in by_queue]
        assert await q.purge(queue=claimed[4].queue) == []
        stats = await q.stats()
        assert stats.identity == "m1,m2"
        assert stats.ready == len(by_queue)
        assert stats.dead == 4 - len(by_queue)
        with pytest.raises(JobNotFound):
            await q.get(f"{QUEUES[0]}/000000009999-1")
        with pytest.raises(InvalidArgument, match="not one of this group's queues"):
            await q.push(b"x", queue="elsewhere")


async def test_a_member_that_stops_hands_its_queues_to_the_other(group: Group) -> None:
    leaving, staying = group.members["m2"], group.members["m1"]
    releases = staying.balancer.releases
    async with RemoteQueue(None, bytes, storage=group.store, group=QUEUES, timeout=5) as q:
        pushed = [await q.push(b"%d" % n, queue=queue) for n, queue in enumerate(QUEUES)]
        leaving.stop()
        with anyio.fail_after(10):
            while set((await stored_owners(group.store)).values()) != {"m1"}:  # noqa: ASYNC110
                await anyio.sleep(0.05)  # m1 takes every queue over
        claimed = []
        with anyio.fail_after(10):
            while len(claimed) < len(pushed):  # up to 8 a call: may be fewer at first
                claimed.extend(await q.claim_many(8, queues=QUEUES, wait=1))
        assert sorted(job.id for job in claimed) == sorted(pushed)
    assert staying.balancer.releases == releases, "alone, it owns them all"
    assert sorted(staying.owned()) == QUEUES
