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
    ObjectStore,
    ObjectVersion,
    WriteConflict,
)

pytestmark = pytest.mark.anyio

RACING_WRITERS = 8
RACE_ROUNDS = 5


@attrs.frozen
class Backend:
    name: str
    store: ObjectStore
    #: S3's ETag is the MD5 of the content: the same bytes give the same version back.
    etag_is_content_hash: bool = False


@pytest.fixture(params=["memory", "local", "s3", "azure"])
def backend(request: pytest.FixtureRequest) -> Backend:
    name: str = request.param
    if name == "memory":
        return Backend(name, request.getfixturevalue("memory_store"))
    if name == "local":
        return Backend(name, request.getfixturevalue("local_store"))
    factory: Callable[[], ObjectStore]
    if name == "s3":
        factory = request.getfixturevalue("s3_store_factory")
        return Backend(name, factory(), etag_is_content_hash=True)
    factory = request.getfixturevalue("azure_store_factory")
    return Backend(name, factory())


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
        await store.create(key, b"x")
    with pytest.raises(InvalidKey):
        await store.update(key, b"x", version)
    with pytest.raises(InvalidKey):
        await store.read_many(["fine", key])
    assert await store.list("") == []
