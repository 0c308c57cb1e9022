"""Scale-out with real member processes on 127.0.0.1 (docs/high-availability.md).

Three members of a six-queue group split the queues 2/2/2; a client that finds each
queue's owner in the bucket pushes to all six and consumes from all six (claims that
span members); one member is killed (kill -9) and its two queues are served again by
the others within the failover time (printed); nothing acknowledged is lost or
stored twice. A fourth member joining takes its share (releases happen, nothing is
lost), and a member that stops cleanly hands its queues over at once.
"""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from osqueue_core import OsqueueError, decode_header
from osqueue_io import RemoteQueue
from osqueue_io.storage import open_store
from tests.io.distributed.conftest import ChildProcess, server_args, stored_records
from tests.io.distributed.test_failover import free_port, payload_of
from tests.io.health import health_status

pytestmark = pytest.mark.anyio

LEASE = 2.0
QUEUES = [f"q{n}" for n in range(6)]
#: A lease no wait in these tests outlasts: what happens within one was not waited for.
LONG_LEASE = 600.0
GROUP_FLAGS = (
    "--group",
    ",".join(QUEUES),
    "--standby-poll",
    "250ms",
    "--heartbeat-timeout",
    "3s",
    "--retry-base",
    "0",
)


@pytest.fixture
def members() -> Iterator[dict[str, ChildProcess]]:
    started: dict[str, ChildProcess] = {}
    yield started
    for child in started.values():
        child.kill()


def start(
    started: dict[str, ChildProcess],
    data: str,
    name: str,
    lease: float = LEASE,
    extra: tuple[str, ...] = (),
) -> ChildProcess:
    flags = (*GROUP_FLAGS, "--owner-lease", f"{lease:g}s", *extra)
    child = ChildProcess(server_args(data, "--identity", name, *flags, port=free_port()))
    started[name] = child
    child.wait_for_line(r"group member .* listening on 127\.0\.0\.1", 20)
    return child


def member_port(child: ChildProcess) -> int:
    """The gRPC port a member logged it listens on."""
    [found] = child.lines_matching(r"group member .* listening on 127\.0\.0\.1:(\d+)")
    return int(found.group(1))


async def owners(data: str) -> dict[str, str | None]:
    """Queue -> the identity of the member that owns it (None: none, or released)."""
    store = open_store(data)
    found: dict[str, str | None] = {}
    try:
        for queue in QUEUES:
            stored = await store.read(f"queues/{queue}/state.json")
            owner = None if stored is None else decode_header(stored.data).owner
            found[queue] = None if owner is None or owner.released else owner.identity
    finally:
        await store.aclose()
    return found


async def balanced(data: str, counts: list[int], within: float) -> dict[str, str | None]:
    """Wait until every queue has an owner and the members own ``counts`` queues."""
    deadline = time.monotonic() + within
    while True:
        found = await owners(data)
        owned = collections.Counter(found.values())
        if None not in owned and sorted(owned.values()) == counts:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not balanced as {counts} after {within}s: {found}")
        await anyio.sleep(0.1)  # polling the bucket, which other processes change


async def everything_stored(data: str) -> dict[bytes, list[str]]:
    """Payload -> the ids of every record holding it, over every queue's state and
    archive (a job in both counted once: :func:`stored_records`)."""
    stored: dict[bytes, list[str]] = {}
    for queue in QUEUES:
        for record in await stored_records(f"{data}/queues/{queue}"):
            assert str(record["id"]).startswith(f"{queue}/"), record["id"]
            stored.setdefault(payload_of(record), []).append(str(record["id"]))
    return stored


async def three_members(
    tmp_path: Path, members: dict[str, ChildProcess], lease: float = LEASE
) -> tuple[str, dict[str, str | None]]:
    """Members m1, m2 and m3 of a group in ``tmp_path``, balanced: its data URL, and
    which member owns each queue."""
    data = str(tmp_path / "group")
    for name in ("m1", "m2", "m3"):
        start(members, data, name, lease)
    return data, await balanced(data, [2, 2, 2], 30)


@asynccontextmanager
async def under_load(data: str, publishers: int, consumers: int) -> AsyncIterator[Load]:
    """Publishers and consumers on one client of the group (which finds each queue's
    owner in the bucket); leaving the block waits until every acknowledged push was
    completed."""
    client = RemoteQueue(
        None, bytes, storage=data, group=QUEUES, timeout=3.0, failover_timeout=30.0
    )
    async with client, anyio.create_task_group() as tasks:
        load = Load(client)
        for n in range(publishers):
            tasks.start_soon(load.publish, n)
        for _ in range(consumers):
            tasks.start_soon(load.consume)
        yield load
        await load.drain()
        tasks.cancel_scope.cancel()


class Load:
    """Publishers pushing to every queue in turn, consumers claiming from all of them
    (claims that span members), through one client of the group."""

    def __init__(self, queue: RemoteQueue[bytes]) -> None:
        self.queue = queue
        self.acked: dict[bytes, str] = {}
        self.completed: set[str] = set()
        #: Queue -> when its last push was acknowledged (monotonic).
        self.last_ack: dict[str, float] = {}
        self.stopping = anyio.Event()

    async def publish(self, n: int) -> None:
        i = 0
        while not self.stopping.is_set():
            name = QUEUES[(n + i) % len(QUEUES)]
            payload = f"{name}-p{n}-{i}".encode()
            i += 1
            try:
                self.acked[payload] = await self.queue.push(payload, queue=name)
            except OsqueueError:
                continue  # not acknowledged: it may or may not exist, never twice
            self.last_ack[name] = time.monotonic()

    async def consume(self) -> None:
        while True:
            try:
                job = await self.queue.claim(queues=QUEUES, wait=0.5)
                if job is not None:
                    await self.queue.complete(job)
                    self.completed.add(job.id)
            except OsqueueError:
                await anyio.sleep(0.05)  # the job comes back after its lease

    async def until(self, acked: int) -> None:
        with anyio.fail_after(60):
            while len(self.acked) < acked:  # noqa: ASYNC110 (load builds up)
                await anyio.sleep(0.05)

    async def drain(self) -> None:
        self.stopping.set()
        with anyio.fail_after(60):
            while not set(self.acked.values()) <= self.completed:  # noqa: ASYNC110
                await anyio.sleep(0.1)


def check_nothing_lost(acked: dict[bytes, str], stored: dict[bytes, list[str]]) -> None:
    for payload, job_id in acked.items():
        assert stored.get(payload) == [job_id], f"{payload!r}: stored as {stored.get(payload)}"
    duplicated = {payload: ids for payload, ids in stored.items() if len(ids) > 1}
    assert not duplicated, f"stored twice: {duplicated}"


async def test_three_members_six_queues_kill_one_its_queues_are_served_again(
    tmp_path: Path, members: dict[str, ChildProcess]
) -> None:
    data, layout = await three_members(tmp_path, members)
    async with under_load(data, publishers=3, consumers=3) as load:
        await load.until(300)
        served = {name for name in QUEUES if name in load.last_ack}
        assert served == set(QUEUES), "every queue is served"
        victim = layout["q0"]
        assert victim is not None
        orphans = [name for name, owner in layout.items() if owner == victim]
        members[victim].process.kill()  # kill -9
        killed_at = time.monotonic()
        with anyio.fail_after(60):
            while not all(  # noqa: ASYNC110 (load on the new owners)
                load.last_ack.get(name, 0) > killed_at for name in orphans
            ):
                await anyio.sleep(0.02)
        failover = {name: load.last_ack[name] - killed_at for name in orphans}
        before = len(load.acked)
        await load.until(before + 300)
    worst = max(failover.values())
    print(
        f"\nfailover: kill -9 of {victim} to the first acknowledged push on each of its "
        f"queues: {', '.join(f'{q} {t:.2f} s' for q, t in failover.items())} "
        f"(lease {LEASE:g} s, {worst / LEASE:.2f}x); {len(load.acked)} pushes "
        f"acknowledged, {len(load.completed)} completed"
    )
    survivors = await balanced(data, [3, 3], 30)
    assert victim not in survivors.values()
    check_nothing_lost(load.acked, await everything_stored(data))


async def test_a_fourth_member_takes_its_share_and_a_clean_stop_hands_queues_over(
    tmp_path: Path, members: dict[str, ChildProcess]
) -> None:
    # With leases far longer than any wait below, each handover here happens without a
    # lease running out (a released state, a left member record), or not at all.
    data, _ = await three_members(tmp_path, members, LONG_LEASE)
    async with under_load(data, publishers=1, consumers=1) as load:
        await load.until(60)
        start(members, data, "m4", LONG_LEASE)
        joined = await balanced(data, [1, 1, 2, 2], 30)
        assert "m4" in joined.values(), "the new member serves its share"
        for child in members.values():  # every member in the group is SERVING
            assert await health_status(member_port(child)) == "SERVING"
            assert await health_status(member_port(child), "osqueue.v1.QueueService") == "SERVING"
        releases = sum(len(child.lines_matching(r"releasing queue")) for child in members.values())
        assert releases >= 1
        await load.until(len(load.acked) + 60)
        # A clean stop: m4 leaves, its queue goes to a member below its quota at once
        # (its released state and its left record need no lease to run out).
        members["m4"].send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert members["m4"].wait(20) == 0
        await balanced(data, [2, 2, 2], 30)
        handover = time.monotonic() - stopped_at
        await load.until(len(load.acked) + 60)
    print(
        f"\nclean stop of a member to its queue served elsewhere: {handover:.2f} s "
        f"(lease {LONG_LEASE:g} s)"
    )
    check_nothing_lost(load.acked, await everything_stored(data))
