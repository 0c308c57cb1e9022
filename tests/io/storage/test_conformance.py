"""The contract every ObjectStore keeps, checked against every backend that runs here.

memory (obstore MemoryStore), local (our LocalFileStore), s3 (obstore S3Store on moto's
server, real HTTP with If-Match/If-None-Match) and azure (obstore AzureStore on azurite).
GCS has no emulator that accepts obstore's conditional headers: see test_url.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio
import attrs
import pytest

from osqueue_io.storage import (
    AlreadyExists,
    InvalidKey,
    LocalFileStore,
    ObjectStore,
    ObjectVersion,
    ObstoreStore,
    WriteConflict,
)

pytestmark = pytest.mark.anyio

RACING_WRITERS = 8
RACE_ROUNDS = 5


@attrs.frozen
class Backend:
    name: str
    store: ObjectStore
    #: Another client of the same storage: a second writer, as another process would be.
    other_client: Callable[[], ObjectStore]
    #: S3's ETag is the MD5 of the content: the same bytes give the same version back.
    etag_is_content_hash: bool = False


@pytest.fixture(params=["memory", "local", "s3", "azure"])
def backend(request: pytest.FixtureRequest) -> Backend:
    name: str = request.param
    if name == "memory":
        memory: ObstoreStore = request.getfixturevalue("memory_store")
        return Backend(name, memory, lambda: ObstoreStore(memory.inner))
    if name == "local":
        local: LocalFileStore = request.getfixturevalue("local_store")
        return Backend(name, local, lambda: LocalFileStore(local.root))
    factory: Callable[..., ObstoreStore]
    factory = request.getfixturevalue("s3_store_factory" if name == "s3" else "azure_store_factory")
    remote = factory()
    return Backend(
        name,
        remote,
        lambda: factory(remote.prefix),
        etag_is_content_hash=name == "s3",
    )


@pytest.fixture
def store(backend: Backend) -> ObjectStore:
    return backend.store


async def test_read_of_absent_key_is_none(store: ObjectStore) -> None:
    assert await store.read("state.json") is None


@pytest.mark.parametrize("data", [b"", b"\x00\xff binary\n", '{"état": "ü"}'.encode()])
async def test_create_then_read_round_trips(store: ObjectStore, data: bytes) -> None:
    version = await store.create("queues/état/state.json", data)

    stored = await store.read("queues/état/state.json")

    assert stored is not None
    assert stored.data == data
    assert stored.version == version


async def test_create_of_existing_key_raises_already_exists(store: ObjectStore) -> None:
    first = await store.create("state.json", b"first")

    with pytest.raises(AlreadyExists) as raised:
        await store.create("state.json", b"second")

    assert raised.value.key == "state.json"
    stored = await store.read("state.json")
    assert stored is not None
    assert (stored.data, stored.version) == (b"first", first)


async def test_update_at_current_version_replaces_object(store: ObjectStore) -> None:
    first = await store.create("state.json", b"one")

    second = await store.update("state.json", b"two", first)

    stored = await store.read("state.json")
    assert stored is not None
    assert (stored.data, stored.version) == (b"two", second)
    assert second != first


async def test_update_with_version_from_read_succeeds(store: ObjectStore) -> None:
    await store.create("state.json", b"one")
    read = await store.read("state.json")
    assert read is not None

    await store.update("state.json", b"two", read.version)

    stored = await store.read("state.json")
    assert stored is not None
    assert stored.data == b"two"


async def test_stale_update_raises_write_conflict(store: ObjectStore) -> None:
    first = await store.create("state.json", b"one")
    second = await store.update("state.json", b"two", first)

    with pytest.raises(WriteConflict) as raised:
        await store.update("state.json", b"stale", first)

    assert raised.value.key == "state.json"
    stored = await store.read("state.json")
    assert stored is not None
    assert (stored.data, stored.version) == (b"two", second)


async def test_update_of_missing_key_raises_write_conflict(store: ObjectStore) -> None:
    """Pinned: an absent key has no version to match, so it is a conflict on every backend."""
    elsewhere = await store.create("other.json", b"x")

    with pytest.raises(WriteConflict):
        await store.update("state.json", b"new", elsewhere)

    assert await store.read("state.json") is None


async def test_version_changes_on_every_write(store: ObjectStore) -> None:
    versions = [await store.create("state.json", b"write 0")]
    for number in range(1, 4):
        versions.append(await store.update("state.json", f"write {number}".encode(), versions[-1]))

    assert len(set(versions)) == len(versions)


async def test_rewriting_same_bytes(backend: Backend) -> None:
    """A -> B -> A: a fresh version everywhere except S3, whose ETag is a content hash.

    That S3 case is why the queue's state carries its own revision: a writer holding the
    first version would pass the check. The test pins the behaviour either way.
    """
    store = backend.store
    first = await store.create("state.json", b"A")
    second = await store.update("state.json", b"B", first)
    third = await store.update("state.json", b"A", second)

    if backend.etag_is_content_hash:
        assert third == first
    else:
        assert third != first
        with pytest.raises(WriteConflict):
            await store.update("state.json", b"stale", first)


async def race_one_round(
    store: ObjectStore, expected: ObjectVersion, round_number: int
) -> tuple[list[tuple[int, ObjectVersion]], list[int]]:
    """Start every writer at once with the same expected version; return winners, losers."""
    winners: list[tuple[int, ObjectVersion]] = []
    conflicts: list[int] = []

    async def write(writer: int) -> None:
        data = f"round {round_number} writer {writer}".encode()
        try:
            winners.append((writer, await store.update("state.json", data, expected)))
        except WriteConflict:
            conflicts.append(writer)

    async with anyio.create_task_group() as group:
        for writer in range(RACING_WRITERS):
            group.start_soon(write, writer)
    return winners, conflicts


async def test_racing_updates_have_exactly_one_winner_per_round(store: ObjectStore) -> None:
    current = await store.create("state.json", b"round -1")
    for round_number in range(RACE_ROUNDS):
        winners, conflicts = await race_one_round(store, current, round_number)

        assert len(winners) == 1, f"round {round_number}: winners {winners}"
        assert len(conflicts) == RACING_WRITERS - 1
        winner, current = winners[0]
        stored = await store.read("state.json")
        assert stored is not None
        assert stored.data == f"round {round_number} writer {winner}".encode()
        assert stored.version == current


async def test_racing_creates_have_exactly_one_winner(store: ObjectStore) -> None:
    winners: list[int] = []
    refused: list[int] = []

    async def create(writer: int) -> None:
        try:
            await store.create("archive/2026-11-27T17/1-1.json", f"writer {writer}".encode())
            winners.append(writer)
        except AlreadyExists:
            refused.append(writer)

    async with anyio.create_task_group() as group:
        for writer in range(RACING_WRITERS):
            group.start_soon(create, writer)

    assert len(winners) == 1
    assert len(refused) == RACING_WRITERS - 1
    stored = await store.read("archive/2026-11-27T17/1-1.json")
    assert stored is not None
    assert stored.data == f"writer {winners[0]}".encode()


async def test_list_returns_sorted_keys_under_whole_segment_prefix(store: ObjectStore) -> None:
    keys = [
        "archive/2026-11-27T18/2-9.json",
        "archive/2026-11-27T17/1-3.json",
        "archive/2026-11-27T17/1-10.json",
        "archive-old/x.json",
        "archived",
        "state.json",
    ]
    for key in keys:
        await store.create(key, b"{}")

    assert await store.list("archive") == [
        "archive/2026-11-27T17/1-10.json",
        "archive/2026-11-27T17/1-3.json",
        "archive/2026-11-27T18/2-9.json",
    ]
    assert await store.list("archive/") == await store.list("archive")
    assert await store.list("archive/2026-11-27T17") == [
        "archive/2026-11-27T17/1-10.json",
        "archive/2026-11-27T17/1-3.json",
    ]
    assert await store.list("") == sorted(keys)
    assert await store.list("nothing-here") == []
    assert await store.list("state.json") == []


async def test_list_with_a_limit_returns_that_many_sorted_keys(store: ObjectStore) -> None:
    under = [f"archive/2026-11-27T{hour}/{number}-1.json" for hour in (17, 18) for number in (1, 2)]
    for key in [*under, "archive-old/x.json", "archived", "state.json"]:
        await store.create(key, b"{}")
    everything = await store.list("archive")
    assert everything == sorted(under)

    for limit in (1, 2, 3, 4, 5, 1000):
        listed = await store.list("archive", limit=limit)

        assert len(listed) == min(limit, len(under)), limit
        assert listed == sorted(listed)
        assert set(listed) <= set(under)
        # Pinned, beyond the contract: every backend here lists in key order, so a limit
        # returns the first keys. A backend listing in another order would still conform.
        assert listed == everything[:limit]
    assert await store.list("nothing-here", limit=1) == []
    assert await store.list("state.json", limit=1) == []
    assert len(await store.list("", limit=1)) == 1


async def test_list_after_a_key_pages_through_the_prefix(store: ObjectStore) -> None:
    under = [f"segments/{epoch:06d}-{n:010d}.json" for epoch in (1, 2) for n in (1, 2, 3)]
    for key in [*under, "segments-old/x.json", "state.json"]:
        await store.create(key, b"{}")

    pages: list[list[str]] = []
    after: str | None = None
    while page := await store.list("segments/", limit=4, start_after=after):
        pages.append(page)
        after = page[-1]
    assert pages == [under[:4], under[4:]]
    # A position need not be a key; everything after it in key order.
    assert await store.list("segments", start_after="segments/000001-9") == under[3:]
    assert await store.list("segments", start_after="segments/000002-0000000003.json") == []
    assert await store.list("segments", start_after="a") == under


async def test_delete_removes_the_object_and_absent_is_no_error(store: ObjectStore) -> None:
    await store.create("segments/000001-0000000001.json", b"one")
    await store.create("segments/000001-0000000002.json", b"two")

    await store.delete("segments/000001-0000000001.json")

    assert await store.read("segments/000001-0000000001.json") is None
    assert await store.head("segments/000001-0000000001.json") is None
    assert await store.list("segments") == ["segments/000001-0000000002.json"]
    stored = await store.read("segments/000001-0000000002.json")
    assert stored is not None
    assert stored.data == b"two"
    await store.delete("segments/000001-0000000001.json")  # gone already: fine
    await store.delete("never/written.json")
    await store.delete("segments")  # a prefix holding keys is no object: nothing happens
    assert await store.list("segments") == ["segments/000001-0000000002.json"]


async def test_a_deleted_key_can_be_created_again_with_a_new_version(store: ObjectStore) -> None:
    first = await store.create("segments/000001-0000000001.json", b"one")
    await store.delete("segments/000001-0000000001.json")

    again = await store.create("segments/000001-0000000001.json", b"again")

    stored = await store.read("segments/000001-0000000001.json")
    assert stored is not None
    assert (stored.data, stored.version) == (b"again", again)
    with pytest.raises(WriteConflict):  # the old version is not the object's any more
        await store.update("segments/000001-0000000001.json", b"stale", first)


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "1"])
async def test_list_limit_below_one_or_not_an_int_is_refused(
    store: ObjectStore, limit: object
) -> None:
    await store.create("archive/1.json", b"{}")

    with pytest.raises(ValueError, match="limit"):
        await store.list("archive", limit=limit)


async def test_head_of_absent_key_is_none(store: ObjectStore) -> None:
    assert await store.head("state.json") is None


async def test_head_of_a_prefix_holding_keys_is_none(store: ObjectStore) -> None:
    await store.create("archive/1.json", b"{}")

    assert await store.head("archive") is None


async def test_head_reports_the_version_writes_and_reads_report(store: ObjectStore) -> None:
    created = await store.create("queues/q/state.json", b"one")
    assert await store.head("queues/q/state.json") == created

    updated = await store.update("queues/q/state.json", b"two", created)

    read = await store.read("queues/q/state.json")
    assert read is not None
    assert await store.head("queues/q/state.json") == updated == read.version
    assert updated != created


async def test_head_sees_another_writers_update(backend: Backend) -> None:
    mine = await backend.store.create("state.json", b"written by me")
    other = backend.other_client()

    theirs = await other.update("state.json", b"written by another client", mine)

    head = await backend.store.head("state.json")
    assert head == theirs
    assert head != mine
    with pytest.raises(WriteConflict):
        await backend.store.update("state.json", b"stale", mine)


async def test_read_many_reads_present_and_absent_keys(store: ObjectStore) -> None:
    present = [f"archive/{number:03d}.json" for number in range(40)]
    for key in present:
        await store.create(key, key.encode())
    wanted = [*present, "archive/missing.json", present[0]]

    found = await store.read_many(wanted)

    assert set(found) == set(wanted)
    assert found["archive/missing.json"] is None
    for key in present:
        stored = found[key]
        assert stored is not None
        assert stored.data == key.encode()


async def test_large_objects_round_trip(store: ObjectStore) -> None:
    first = os.urandom(8 * 1024 * 1024)
    second = os.urandom(6 * 1024 * 1024 + 7)

    version = await store.create("big.bin", first)
    stored = await store.read("big.bin")
    assert stored is not None
    assert stored.data == first

    await store.update("big.bin", second, version)
    stored = await store.read("big.bin")
    assert stored is not None
    assert stored.data == second

    with pytest.raises(AlreadyExists):
        await store.create("big.bin", first)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/absolute",
        "../escape",
        "a/../../escape",
        "a//b",
        "a/",
        "./a",
        "a\\b",
        "a\x00b",
        ".osq-lock",
    ],
)
async def test_invalid_keys_are_refused_everywhere(store: ObjectStore, key: str) -> None:
    version = ObjectVersion(e_tag="x", version="1")
    with pytest.raises(InvalidKey):
        await store.read(key)
    with pytest.raises(InvalidKey):
        await store.head(key)
    with pytest.raises(InvalidKey):
        await store.create(key, b"x")
    with pytest.raises(InvalidKey):
        await store.update(key, b"x", version)
    with pytest.raises(InvalidKey):
        await store.read_many(["fine", key])
    with pytest.raises(InvalidKey):
        await store.delete(key)
    assert await store.list("") == []
