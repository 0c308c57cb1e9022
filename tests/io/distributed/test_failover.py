"""High availability with real broker processes on 127.0.0.1 (docs/high-availability.md).

A standby takes over when the owner is killed (kill -9) under load, clients that find
the owner through the bucket follow it, and nothing acknowledged is lost or pushed
twice; two brokers started together end with one owner (the other answers health
checks NOT_SERVING and queue calls NotOwner); an owner paused past its lease and
resumed never writes again.
"""

from __future__ import annotations

import base64
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from osqueue_core import BrokerNotRunning, BrokerReplaced, NotOwner, OsqueueError, decode_state
from osqueue_io import RemoteQueue
from osqueue_io.remote import Worker
from osqueue_io.storage import open_store
from tests.io.conftest import wait_for_port
from tests.io.distributed.conftest import ChildProcess, server_args, stored_records
from tests.io.health import health_status

pytestmark = pytest.mark.anyio

LEASE = 2.0
HA_FLAGS = (
    "--owner-lease",
    f"{LEASE}s",
    "--standby-poll",
    "250ms",
    "--standby",
    "--heartbeat-timeout",
    "3s",
    "--retry-base",
    "0",
)
LISTENING = r"listening on 127\.0\.0\.1:(\d+)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def brokers() -> Iterator[list[ChildProcess]]:
    started: list[ChildProcess] = []
    yield started
    for child in started:
        if child.process.poll() is None:
            child.send_signal(signal.SIGCONT)  # a paused one must be able to die
        child.kill()


def start(started: list[ChildProcess], data: str, name: str, *flags: str) -> ChildProcess:
    port = free_port()
    child = ChildProcess(server_args(data, "--identity", name, *HA_FLAGS, *flags, port=port))
    child.port = port  # type: ignore[attr-defined]
    started.append(child)
    return child


async def owner(data: str) -> tuple[str, int]:
    store = open_store(data)
    try:
        found = await store.read("state.json")
    finally:
        await store.aclose()
    assert found is not None
    header = decode_state(found.data).header
    return header.owner.identity, header.owner.epoch


def payload_of(record: dict[str, object]) -> bytes:
    born = record["born"]
    assert isinstance(born, dict)
    return base64.b64decode(born.get("data", ""))


async def test_kill_9_under_load_a_standby_takes_over_and_nothing_acknowledged_is_lost(
    tmp_path: Path, brokers: list[ChildProcess]
) -> None:
    data = str(tmp_path / "queue")
    a = start(brokers, data, "broker-a")
    a.wait_for_line(LISTENING, 20)  # no state yet: a standby creates it at once
    b = start(brokers, data, "broker-b")
    b.wait_for_line("standing by", 20)
    acked: dict[bytes, str] = {}
    completed: set[str] = set()
    killed_at: float | None = None
    first_success_after_kill: float | None = None
    stop_pushing = anyio.Event()

    async with RemoteQueue(None, bytes, storage=data, timeout=3.0, failover_timeout=30.0) as q:

        async def publish(n: int) -> None:
            nonlocal first_success_after_kill
            i = 0
            while not stop_pushing.is_set():
                payload = f"p{n}-{i}".encode()
                i += 1
                sent_at = time.monotonic()
                try:
                    acked[payload] = await q.push(payload)
                except OsqueueError:
                    continue  # not acknowledged: it may or may not exist, never twice
                after_kill = killed_at is not None and sent_at > killed_at
                if after_kill and first_success_after_kill is None:
                    first_success_after_kill = time.monotonic()

        async def consume() -> None:
            while True:
                try:
                    job = await q.claim(wait=0.5)
                    if job is not None:
                        await q.complete(job)
                        completed.add(job.id)
                except OsqueueError:
                    await anyio.sleep(0.05)  # the job comes back after its lease

        async with anyio.create_task_group() as tasks:
            for n in range(4):
                tasks.start_soon(publish, n)
            for _ in range(3):
                tasks.start_soon(consume)
            with anyio.fail_after(60):
                while len(acked) < 300:  # noqa: ASYNC110 (load builds up)
                    await anyio.sleep(0.05)
            a.process.kill()  # kill -9
            killed_at = time.monotonic()
            with anyio.fail_after(60):
                while first_success_after_kill is None:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                before = len(acked)
                while len(acked) < before + 300:  # noqa: ASYNC110 (load on the new owner)
                    await anyio.sleep(0.05)
            stop_pushing.set()
            with anyio.fail_after(60):
                while not set(acked.values()) <= completed:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            tasks.cancel_scope.cancel()
        stats = await q.stats()

    failover = first_success_after_kill - killed_at
    print(f"\nfailover: kill -9 to the first acknowledged push on the standby: {failover:.2f} s")
    print(f"lease {LEASE:g} s; {len(acked)} pushes acknowledged, {len(completed)} completed")
    b.wait_for_line(LISTENING, 5)  # it served: it logged its takeover
    assert await owner(data) == ("broker-b", 2)
    assert stats.identity == "broker-b"
    records = await stored_records(data)  # the state, then the archive: b still runs
    by_payload: dict[bytes, list[str]] = {}
    for record in records:
        ids = by_payload.setdefault(payload_of(record), [])
        # The same id is one job (stored_records already counts a job archived and not
        # yet dropped from the state once); two ids would be two.
        if str(record["id"]) not in ids:
            ids.append(str(record["id"]))
    for payload, job_id in acked.items():
        assert by_payload.get(payload) == [job_id], (
            f"{payload!r}: stored as {by_payload.get(payload)}"
        )
    duplicated = {p: ids for p, ids in by_payload.items() if len(ids) > 1}
    assert not duplicated, f"pushed twice by client retries: {duplicated}"


async def test_two_brokers_started_together_one_owns_the_other_stands_by(
    tmp_path: Path, brokers: list[ChildProcess]
) -> None:
    data = str(tmp_path / "queue")
    a = start(brokers, data, "broker-a")
    b = start(brokers, data, "broker-b")
    for child in (a, b):
        child.wait_for_line("standing by", 20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        a.collect()
        b.collect()
        if a.lines_matching(LISTENING) or b.lines_matching(LISTENING):
            break
        await anyio.sleep(0.1)  # polling another process's log
    first_owner = await owner(data)
    # Several leases later: still one owner, the same one, and the other never served.
    await anyio.sleep(3 * LEASE)  # an observation window, not a wait for an event
    assert await owner(data) == first_owner
    winner, loser = (a, b) if first_owner[0] == "broker-a" else (b, a)
    assert winner.lines_matching(LISTENING)
    assert not loser.lines_matching(LISTENING)
    # The standby answers health checks NOT_SERVING, and queue calls NotOwner naming
    # the owner; the owner is SERVING.
    assert await health_status(loser.port) == "NOT_SERVING"  # type: ignore[attr-defined]
    assert await health_status(winner.port) == "SERVING"  # type: ignore[attr-defined]
    assert (
        await health_status(loser.port, "osqueue.v1.QueueService")  # type: ignore[attr-defined]
        == "NOT_SERVING"
    )
    async with Worker(f"127.0.0.1:{loser.port}") as direct:  # type: ignore[attr-defined]
        for call in (lambda: direct.push(b"to the standby"), direct.stats):
            with pytest.raises(NotOwner) as refused:
                await call()
            assert refused.value.new_identity == first_owner[0]
    assert first_owner[1] in (1, 2)
    assert loser.process.poll() is None, "the loser keeps standing by"
    assert await owner(data) == first_owner, "nothing the standby was sent took effect"


async def test_an_owner_paused_past_its_lease_never_writes_again(
    tmp_path: Path, brokers: list[ChildProcess]
) -> None:
    data = str(tmp_path / "queue")
    a = start(brokers, data, "broker-a")
    a.wait_for_line(LISTENING, 20)
    b = start(brokers, data, "broker-b")
    b.wait_for_line("standing by", 20)
    async with Worker(f"127.0.0.1:{a.port}") as direct:  # type: ignore[attr-defined]
        await direct.push(b"before the pause")
    a.send_signal(signal.SIGSTOP)
    b.wait_for_line(LISTENING, 10 * LEASE)
    wait_for_port("127.0.0.1", b.port)  # type: ignore[attr-defined]
    taken = await owner(data)
    assert taken == ("broker-b", 2)
    async with Worker(f"127.0.0.1:{b.port}") as new:  # type: ignore[attr-defined]
        ready_before = (await new.stats()).ready
        a.send_signal(signal.SIGCONT)
        async with Worker(f"127.0.0.1:{a.port}", timeout=5) as old:  # type: ignore[attr-defined]
            with pytest.raises((BrokerReplaced, BrokerNotRunning)) as refused:
                await old.push(b"sent to the old owner")
        if isinstance(refused.value, BrokerReplaced):
            assert refused.value.new_identity == "broker-b"
        a.wait_for_line("standing by again", 20)
        await anyio.sleep(LEASE)  # a window for a resumed writer to show itself
        assert await owner(data) == taken
        stats = await new.stats()
        assert stats.identity == "broker-b"
        assert stats.ready == ready_before, "the old owner's push was not stored"
    assert len(a.lines_matching(LISTENING)) == 1, "it never served again"
