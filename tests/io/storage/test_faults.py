"""FaultyStore: each fault does what it says, the inner store holds what it should, and the
same seed gives the same faults. Run against MemoryStore and the local backend.

Late writes are timed by an injected ``sleep``: a :class:`Gate` holds them until the test
opens it, so "not landed yet" is checked without racing a clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from osqueue_io.storage import (
    FaultKind,
    Faults,
    FaultyStore,
    InvalidKey,
    LocalFileStore,
    ObjectStore,
    OutcomeUnknown,
    ReadFailed,
    StorageError,
    WriteConflict,
    WriteNotApplied,
    keys_under,
    open_store,
)

pytestmark = pytest.mark.anyio

HANG_GUARD = 30.0


class Gate:
    """An injected ``sleep`` that records each delay asked for. Delays shorter than
    ``hold_from`` return at once; longer ones wait until the test opens the gate."""

    def __init__(self, hold_from: float = 0.0) -> None:
        self.hold_from = hold_from
        self.requested: list[float] = []
        self._opened = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        self.requested.append(seconds)
        if seconds < self.hold_from:
            await anyio.lowlevel.checkpoint()
        else:
            await self._opened.wait()

    def open(self) -> None:
        self._opened.set()


def recorder() -> Gate:
    """A Gate that never holds: it only records the delays."""
    return Gate(hold_from=float("inf"))


@pytest.fixture(params=["memory", "local"])
def make_inner(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ObjectStore]:
    """Call it for a fresh, empty inner store of the parametrised kind."""
    counter = iter(range(1_000_000))
    if request.param == "memory":
        return lambda: open_store("memory://")
    return lambda: LocalFileStore(tmp_path / f"store-{next(counter)}")


@pytest.fixture
def inner(make_inner: Callable[[], ObjectStore]) -> ObjectStore:
    return make_inner()


@pytest.fixture
async def stores(inner: ObjectStore) -> AsyncIterator[list[FaultyStore]]:
    """Closes every FaultyStore a test appends, so no late-write task outlives the test."""
    opened: list[FaultyStore] = []
    yield opened
    for store in opened:
        await store.aclose()
        assert store.pending_late_writes == 0


def faulty(
    stores: list[FaultyStore],
    inner: ObjectStore,
    faults: Faults,
    *,
    seed: int = 1,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> FaultyStore:
    store = FaultyStore(inner, faults, seed=seed, sleep=sleep)
    stores.append(store)
    return store


def counted(store: FaultyStore) -> dict[str, int]:
    """The non-zero counters."""
    return {kind: count for kind, count in store.counters.items() if count}


async def test_no_faults_passes_every_call_through(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    store = faulty(stores, inner, Faults())
    assert isinstance(store, ObjectStore)

    first = await store.create("archive/a.json", b"one")
    second = await store.update("archive/a.json", b"two", first)

    stored = await store.read("archive/a.json")
    assert stored is not None
    assert (stored.data, stored.version) == (b"two", second)
    assert await store.head("archive/a.json") == second
    assert await store.list("archive") == ["archive/a.json"]
    assert await store.list("archive", limit=1) == ["archive/a.json"]
    assert await store.list("archive", start_after="archive/a.json") == []
    await store.create("archive/b.json", b"three")
    await store.delete("archive/b.json")
    assert await inner.read("archive/b.json") is None
    assert (await store.read_many(["archive/a.json"]))["archive/a.json"] == stored
    assert store.url == f"faulty+{inner.url}"
    assert counted(store) == {}
    assert set(store.counters) == {kind.value for kind in FaultKind}


async def test_latency_is_slept_before_each_call(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    sleeps = recorder()
    store = faulty(stores, inner, Faults(latency=0.01, latency_jitter=0.02), sleep=sleeps.sleep)

    version = await store.create("state", b"x")
    await store.update("state", b"y", version)
    await store.read("state")
    await store.head("state")
    await store.list("")
    await store.read_many(["state", "other"])

    assert len(sleeps.requested) == 6
    assert all(0.01 <= delay < 0.03 for delay in sleeps.requested)
    assert len(set(sleeps.requested)) == 6  # the jitter is drawn per call
    assert counted(store) == {"delayed": 6}


async def test_latency_really_waits(inner: ObjectStore, stores: list[FaultyStore]) -> None:
    store = faulty(stores, inner, Faults(latency=0.05))

    started = anyio.current_time()
    assert await store.read("state") is None

    assert anyio.current_time() - started >= 0.05


async def test_read_failures_leave_the_inner_store_alone(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    version = await inner.create("state", b"kept")
    store = faulty(stores, inner, Faults(read_failure=1.0))

    with pytest.raises(ReadFailed, match="injected fault"):
        await store.read("state")
    with pytest.raises(ReadFailed):
        await store.head("state")
    with pytest.raises(ReadFailed, match="listing"):
        await store.list("")
    with pytest.raises(ReadFailed):
        await store.read_many(["state", "other"])

    assert counted(store) == {"read_failed": 4}
    stored = await inner.read("state")
    assert stored is not None
    assert (stored.data, stored.version) == (b"kept", version)


@pytest.mark.parametrize(
    ("fault", "error"),
    [("write_not_applied", WriteNotApplied), ("write_lost", OutcomeUnknown)],
)
async def test_refused_or_lost_write_writes_nothing(
    inner: ObjectStore, stores: list[FaultyStore], fault: str, error: type[StorageError]
) -> None:
    version = await inner.create("state", b"old")
    store = faulty(stores, inner, Faults(**{fault: 1.0}))

    with pytest.raises(error, match=f"injected fault: {fault}"):
        await store.create("new", b"x")
    with pytest.raises(error):
        await store.update("state", b"new", version)

    assert await inner.read("new") is None
    assert await inner.head("state") == version
    assert counted(store) == {fault: 2}


async def test_lost_acknowledgement_is_unknown_but_the_write_landed(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    version = await inner.create("state", b"old")
    store = faulty(stores, inner, Faults(write_ack_lost=1.0))

    with pytest.raises(OutcomeUnknown, match="write_ack_lost"):
        await store.create("new", b"x")
    with pytest.raises(OutcomeUnknown):
        await store.update("state", b"new", version)

    created, updated = await inner.read("new"), await inner.read("state")
    assert created is not None
    assert created.data == b"x"
    assert updated is not None
    assert updated.data == b"new"
    assert updated.version != version
    assert counted(store) == {"write_ack_lost": 2}


@pytest.mark.parametrize(
    ("fault", "error", "deleted"),
    [
        ("write_not_applied", WriteNotApplied, False),
        ("write_lost", OutcomeUnknown, False),
        ("write_ack_lost", OutcomeUnknown, True),
    ],
)
async def test_a_delete_meets_the_write_faults(
    inner: ObjectStore,
    stores: list[FaultyStore],
    fault: str,
    error: type[StorageError],
    deleted: bool,
) -> None:
    await inner.create("segments/a", b"x")
    store = faulty(stores, inner, Faults(**{fault: 1.0}))

    with pytest.raises(error, match=f"delete of 'segments/a'.*injected fault: {fault}"):
        await store.delete("segments/a")

    assert (await inner.read("segments/a") is None) is deleted
    assert counted(store) == {fault: 1}


async def test_a_late_delete_lands_after_its_delay(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    gate = Gate()
    await inner.create("segments/a", b"x")
    store = faulty(stores, inner, Faults(late_write=1.0), sleep=gate.sleep)

    with pytest.raises(OutcomeUnknown, match="late_write"):
        await store.delete("segments/a")
    assert await inner.read("segments/a") is not None
    gate.open()
    with anyio.fail_after(HANG_GUARD):
        await store.settle()

    assert await inner.read("segments/a") is None
    assert counted(store) == {"late_write": 1, "late_write_landed": 1}


async def test_lost_acknowledgement_of_a_refused_write_reports_the_refusal(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    """Nothing landed, so "outcome unknown" would hide a certainty: the conflict is raised."""
    first = await inner.create("state", b"one")
    await inner.update("state", b"two", first)
    store = faulty(stores, inner, Faults(write_ack_lost=1.0))

    with pytest.raises(WriteConflict):
        await store.update("state", b"stale", first)

    assert counted(store) == {}


async def test_late_write_lands_after_its_delay(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    store = faulty(stores, inner, Faults(late_write=1.0, late_write_delay=0.2))

    started = anyio.current_time()
    with pytest.raises(OutcomeUnknown, match="late_write"):
        await store.create("state", b"late")
    assert store.pending_late_writes == 1
    with anyio.fail_after(HANG_GUARD):
        await store.settle()

    assert anyio.current_time() - started >= 0.2
    assert store.pending_late_writes == 0
    stored = await inner.read("state")
    assert stored is not None
    assert stored.data == b"late"
    assert counted(store) == {"late_write": 1, "late_write_landed": 1}


async def test_late_write_has_not_landed_before_its_delay_passes(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    gate = Gate()
    faults = Faults(late_write=1.0, late_write_delay=0.5, late_write_jitter=0.25)
    store = faulty(stores, inner, faults, sleep=gate.sleep)

    with pytest.raises(OutcomeUnknown):
        await store.create("state", b"late")
    for _ in range(10):  # let the late-write task run up to its delay
        await anyio.lowlevel.checkpoint()

    assert len(gate.requested) == 1
    assert 0.5 <= gate.requested[0] < 0.75
    assert await inner.read("state") is None
    gate.open()
    with anyio.fail_after(HANG_GUARD):
        await store.settle()
    stored = await inner.read("state")
    assert stored is not None
    assert stored.data == b"late"


async def test_late_update_is_refused_if_the_object_moved_on(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    gate = Gate()
    version = await inner.create("state", b"one")
    store = faulty(stores, inner, Faults(late_write=1.0), sleep=gate.sleep)
    with pytest.raises(OutcomeUnknown):
        await store.update("state", b"late", version)
    # What a runtime does after an unknown outcome: re-read, and write again.
    winner = await inner.update("state", b"retried", version)

    gate.open()
    with anyio.fail_after(HANG_GUARD):
        await store.settle()

    stored = await inner.read("state")
    assert stored is not None
    assert (stored.data, stored.version) == (b"retried", winner)
    assert counted(store) == {"late_write": 1, "late_write_refused": 1}


async def test_aclose_drops_waiting_late_writes_and_leaks_no_task(inner: ObjectStore) -> None:
    gate = Gate()  # never opened: the late writes would wait forever
    store = FaultyStore(inner, Faults(late_write=1.0), seed=1, sleep=gate.sleep)
    tasks_before = asyncio.all_tasks()
    for number in range(3):
        with pytest.raises(OutcomeUnknown):
            await store.create(f"state-{number}", b"late")
    assert store.pending_late_writes == 3

    with anyio.fail_after(HANG_GUARD):
        await store.aclose()

    assert store.pending_late_writes == 0
    assert asyncio.all_tasks() == tasks_before
    assert await inner.list("") == []
    assert counted(store) == {"late_write": 3, "late_write_cancelled": 3}


async def test_rogue_writer_makes_the_update_conflict(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    version = await inner.create("state", b"original")
    store = faulty(stores, inner, Faults(rogue_writer=1.0))

    with pytest.raises(WriteConflict):
        await store.update("state", b"mine", version)

    stored = await inner.read("state")
    assert stored is not None
    assert stored.data == b"original"  # rewritten unchanged...
    assert stored.version != version  # ...as a new version
    assert counted(store) == {"rogue_write": 1}
    # Creates meet no rogue writer: there is no object to rewrite before them.
    await store.create("other", b"x")
    assert counted(store) == {"rogue_write": 1}


async def test_faults_hit_only_the_keys_the_filter_accepts(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    faults = Faults(read_failure=1.0, write_not_applied=1.0, keys=keys_under("archive"))
    store = faulty(stores, inner, faults)

    version = await store.create("state.json", b"fine")
    await store.update("state.json", b"still fine", version)
    assert await store.read("state.json") is not None
    assert await store.list("") == ["state.json"]
    with pytest.raises(WriteNotApplied):
        await store.create("archive/1.json", b"x")
    with pytest.raises(ReadFailed):
        await store.read("archive/1.json")
    with pytest.raises(ReadFailed):
        await store.list("archive")
    with pytest.raises(ReadFailed):
        await store.read_many(["state.json", "archive/1.json"])

    assert counted(store) == {"write_not_applied": 1, "read_failed": 3}


async def script(store: FaultyStore) -> list[str]:
    """A fixed sequence of calls; returns what each one did."""
    outcomes: list[str] = []
    version = await store.inner.create("state", b"0")
    for step in range(160):
        try:
            match step % 4:
                case 0:
                    await store.read("state")
                case 1:
                    await store.list("")
                case 2:
                    await store.create(f"archive/{step}", b"x")
                case _:
                    version = await store.update("state", b"%d" % step, version)
            outcomes.append("ok")
        except StorageError as error:
            outcomes.append(type(error).__name__)
            # What a runtime does after any failure: re-read before writing again.
            current = await store.inner.read("state")
            assert current is not None
            version = current.version
    return outcomes


async def test_the_same_seed_gives_the_same_faults(
    make_inner: Callable[[], ObjectStore], stores: list[FaultyStore]
) -> None:
    faults = Faults(
        latency=0.001,
        latency_jitter=0.001,
        read_failure=0.1,
        write_not_applied=0.1,
        write_lost=0.1,
        write_ack_lost=0.1,
        late_write=0.1,
        late_write_delay=1.0,
        rogue_writer=0.1,
    )
    runs = []
    for seed in (7, 7, 8):
        # Latency passes at once; late writes stay pending, so no timing can reorder them.
        sleeps = Gate(hold_from=1.0)
        store = faulty(stores, make_inner(), faults, seed=seed, sleep=sleeps.sleep)
        outcomes = await script(store)
        runs.append((outcomes, counted(store), sleeps.requested))

    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]
    kinds = set(runs[0][1])
    assert {"read_failed", "write_not_applied", "write_lost", "write_ack_lost"} <= kinds
    assert {"late_write", "rogue_write", "delayed"} <= kinds


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"read_failure": 1.5}, "read_failure is a probability"),
        ({"rogue_writer": -0.1}, "rogue_writer is a probability"),
        ({"write_lost": True}, "write_lost is a probability"),
        ({"latency": -1.0}, "latency is a duration"),
        ({"late_write_delay": float("inf")}, "late_write_delay is a duration"),
        ({"write_lost": 0.6, "late_write": 0.6}, "add up to at most 1"),
    ],
)
def test_bad_fault_settings_are_refused(options: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Faults(**options)


async def test_invalid_keys_are_refused_before_any_fault(
    inner: ObjectStore, stores: list[FaultyStore]
) -> None:
    store = faulty(stores, inner, Faults(read_failure=1.0, write_not_applied=1.0))

    with pytest.raises(InvalidKey):
        await store.read("../escape")
    with pytest.raises(InvalidKey):
        await store.create("a//b", b"x")
    with pytest.raises(ValueError, match="limit"):
        await store.list("", limit=0)
    assert counted(store) == {}
