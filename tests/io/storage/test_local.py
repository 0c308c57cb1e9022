"""LocalFileStore beyond the conformance suite: real processes, real kills, real paths.

Children are separate Python processes started with subprocess; they talk to the test
over stdin/stdout lines, which is also how the test waits for them (no sleeps).
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from osqueue_io.storage import (
    CorruptObject,
    InvalidKey,
    LocalFileStore,
    ObjectVersion,
    StorageConfigError,
    WriteConflict,
    WriteNotApplied,
)

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[3]
CHILD_TIMEOUT = 60.0


class Child:
    """A Python child process running ``script`` with the store's root as ``sys.argv[1]``."""

    def __init__(self, script: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def read_line(self) -> str:
        """The child's next output line; fail if it takes longer than CHILD_TIMEOUT."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], CHILD_TIMEOUT)
        if not ready:
            pytest.fail(f"child said nothing for {CHILD_TIMEOUT} s")
        line = self.process.stdout.readline()
        if not line:
            pytest.fail(f"child exited early with {self.process.wait()}")
        return line.strip()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=CHILD_TIMEOUT) == -signal.SIGKILL

    def finish(self) -> int:
        return self.process.wait(timeout=CHILD_TIMEOUT)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.close()


INCREMENTER = """
    import sys, anyio
    from osqueue_io.storage import LocalFileStore, WriteConflict

    async def main(root, increments):
        store = LocalFileStore(root)
        conflicts = 0
        print("ready", flush=True)
        sys.stdin.readline()  # wait for "go", so every child starts at once
        for _ in range(increments):
            while True:
                current = await store.read("counter")
                try:
                    await store.update("counter", b"%d" % (int(current.data) + 1), current.version)
                    break
                except WriteConflict:
                    conflicts += 1
        print("done", conflicts, flush=True)

    anyio.run(main, sys.argv[1], int(sys.argv[2]))
"""


async def test_processes_incrementing_one_counter_lose_no_update(
    tmp_path: Path, children: list[Child]
) -> None:
    processes, increments = 4, 50
    store = LocalFileStore(tmp_path)
    await store.create("counter", b"0")
    children.extend(Child(INCREMENTER, str(tmp_path), str(increments)) for _ in range(processes))
    for child in children:
        assert child.read_line() == "ready"

    for child in children:
        child.send("go")
    results = [child.read_line() for child in children]

    assert all(result.startswith("done") for result in results)
    assert [child.finish() for child in children] == [0] * processes
    stored = await store.read("counter")
    assert stored is not None
    assert int(stored.data) == processes * increments
    # The token's counter counts writes: the create plus one per increment.
    assert stored.version.e_tag is not None
    assert stored.version.e_tag.startswith(f"{processes * increments + 1}-")


PAUSER = """
    import os, sys, threading, anyio
    from osqueue_io.storage import LocalFileStore

    point = sys.argv[2]
    real_fsync, real_replace = os.fsync, os.replace

    def pause():
        print("paused", flush=True)
        threading.Event().wait()  # until the test kills this process

    def fsync(fd):
        if point == "before-fsync":
            pause()
        real_fsync(fd)

    def replace(source, target):
        if point == "before-rename":
            pause()
        real_replace(source, target)
        if point == "after-rename":
            pause()

    os.fsync, os.replace = fsync, replace

    async def main(root):
        store = LocalFileStore(root)
        current = await store.read("state")
        await store.update("state", b"new" * 1_000_000, current.version)

    anyio.run(main, sys.argv[1])
"""


@pytest.mark.parametrize(
    ("point", "survivor", "temp_left"),
    [
        ("before-fsync", b"old", True),
        ("before-rename", b"old", True),
        ("after-rename", b"new", False),
    ],
)
async def test_writer_killed_at_each_step_leaves_old_or_new(
    tmp_path: Path, children: list[Child], point: str, survivor: bytes, temp_left: bool
) -> None:
    store = LocalFileStore(tmp_path)
    await store.create("state", b"old" * 1_000_000)
    child = Child(PAUSER, str(tmp_path), point)
    children.append(child)
    assert child.read_line() == "paused"

    child.kill()

    assert (".osq-tmp" in entries(tmp_path)) is temp_left
    stored = await store.read("state")
    assert stored is not None
    assert stored.data == survivor * 1_000_000
    # The dead writer's lock is gone with it and its temp file is invisible and harmless.
    assert await store.list("") == ["state"]
    await store.update("state", b"after", stored.version)
    after = await store.read("state")
    assert after is not None
    assert after.data == b"after"


LOOPER = """
    import sys, anyio
    from osqueue_io.storage import LocalFileStore

    SIZE = 4 * 1024 * 1024

    async def main(root):
        store = LocalFileStore(root)
        version = (await store.read("state")).version
        number = 0
        while True:
            number += 1
            data = b"%d:" % number + bytes([number % 256]) * SIZE
            print("writing", number, flush=True)
            version = await store.update("state", data, version)

    anyio.run(main, sys.argv[1])
"""


async def test_writer_killed_while_writing_in_a_loop_never_leaves_a_torn_object(
    tmp_path: Path, children: list[Child]
) -> None:
    size = 4 * 1024 * 1024
    store = LocalFileStore(tmp_path)
    await store.create("state", b"0:" + bytes([0]) * size)
    child = Child(LOOPER, str(tmp_path))
    children.append(child)
    reported = [child.read_line() for _ in range(4)]
    assert reported == ["writing 1", "writing 2", "writing 3", "writing 4"]

    child.kill()  # writes 1-3 have landed; write 4 has started and may be anywhere

    stored = await store.read("state")
    assert stored is not None
    number_text, _, body = stored.data.partition(b":")
    number = int(number_text)
    assert number >= 3
    assert body == bytes([number % 256]) * size


@pytest.mark.parametrize(
    "key", ["../outside", "a/../../outside", "/etc/passwd", "a//b", "a\\..\\b", "", "a/.osq-tmp"]
)
async def test_keys_escaping_the_root_are_refused(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    store = LocalFileStore(root)

    with pytest.raises(InvalidKey):
        await store.create(key, b"x")
    with pytest.raises(InvalidKey):
        store.path_of(key)

    assert entries(tmp_path) == ["root"]
    assert entries(root) == []


@pytest.mark.parametrize("prefix", ["../", "/", "a//b", ".."])
async def test_list_prefix_escaping_the_root_is_refused(
    local_store: LocalFileStore, prefix: str
) -> None:
    with pytest.raises(InvalidKey):
        await local_store.list(prefix)


async def test_key_cannot_be_both_object_and_directory(local_store: LocalFileStore) -> None:
    await local_store.create("a/b", b"x")

    with pytest.raises(InvalidKey):
        await local_store.create("a", b"x")
    with pytest.raises(InvalidKey):
        await local_store.create("a/b/c", b"x")
    assert await local_store.read("a") is None


async def test_version_token_never_repeats_after_recreate(local_store: LocalFileStore) -> None:
    first = await local_store.create("state", b"same")
    local_store.path_of("state").unlink()  # someone deletes it by hand

    second = await local_store.create("state", b"same")

    assert first != second
    with pytest.raises(WriteConflict):
        await local_store.update("state", b"stale", first)


async def assert_corrupt_and_left_alone(
    store: LocalFileStore, key: str, version: ObjectVersion, match: str
) -> None:
    """Every operation on ``key`` raises CorruptObject on its first try; the file stays."""
    path = store.path_of(key)
    damaged = path.read_bytes()
    for operation in (
        store.read(key),
        store.head(key),
        store.read_many([key]),
        store.update(key, b"over it", version),
        store.create(key, b"over it"),
    ):
        with pytest.raises(CorruptObject, match=match) as raised:
            await operation
        assert raised.value.key == key
        assert raised.value.retryable is False
        assert raised.value.grpc_status == "DATA_LOSS"
        assert "will not overwrite" in str(raised.value)
    assert path.read_bytes() == damaged


@pytest.mark.parametrize(
    "content",
    [b'{"hand": "written"}', b"", b"\n", b"osqueue-object-v1 1 abc\n{}", b"x" * 1000 + b"\n"],
)
async def test_file_not_written_by_osqueue_is_corrupt_and_never_overwritten(
    local_store: LocalFileStore, content: bytes
) -> None:
    local_store.path_of("state").write_bytes(content)

    await assert_corrupt_and_left_alone(
        local_store, "state", ObjectVersion(e_tag="1-0", version=None), match="header"
    )


@pytest.mark.parametrize(
    ("damage", "detail"),
    [
        (lambda raw: raw[:-3], "holds 7 data bytes but its header says 10"),
        (lambda raw: raw + b"more", "holds 14 data bytes but its header says 10"),
        (lambda raw: raw[: raw.index(b"\n")], "no osqueue-object-v1 header line"),
    ],
)
async def test_truncated_or_extended_object_is_corrupt_and_never_overwritten(
    local_store: LocalFileStore, damage: Callable[[bytes], bytes], detail: str
) -> None:
    version = await local_store.create("state", b"0123456789")
    path = local_store.path_of("state")
    path.write_bytes(damage(path.read_bytes()))

    await assert_corrupt_and_left_alone(local_store, "state", version, match=detail)


async def test_objects_are_files_under_the_root(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path / "new" / "root")

    await store.create("archive/2026-11-27T17/1-1.json", b"{}")

    assert (tmp_path / "new" / "root" / "archive" / "2026-11-27T17" / "1-1.json").is_file()
    assert store.url == (tmp_path / "new" / "root").as_uri()
    assert await store.list("") == ["archive/2026-11-27T17/1-1.json"]


async def test_threads_of_one_process_also_exclude_each_other(local_store: LocalFileStore) -> None:
    await local_store.create("counter", b"0")

    async def increment(times: int) -> None:
        for _ in range(times):
            while True:
                current = await local_store.read("counter")
                assert current is not None
                try:
                    new = b"%d" % (int(current.data) + 1)
                    await local_store.update("counter", new, current.version)
                    break
                except WriteConflict:
                    continue

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(increment, 10)

    stored = await local_store.read("counter")
    assert stored is not None
    assert stored.data == b"80"


def test_root_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageConfigError, match="not a directory"):
        LocalFileStore(tmp_path / "file")
    with pytest.raises(StorageConfigError, match="does not exist"):
        LocalFileStore(tmp_path / "missing", create_root=False)


async def test_limited_listing_walks_directories_in_key_order(local_store: LocalFileStore) -> None:
    # '-' sorts before '/', so the key "a-b" comes between "a" 's children and nothing
    # else: a walk that visited directory "a" first would get the order wrong.
    keys = ["a/c", "a/b/d", "a-b", "a.x/y", "a0", "b"]
    for key in keys:
        await local_store.create(key, b"{}")

    assert await local_store.list("") == sorted(keys)
    for limit in range(1, len(keys) + 2):
        assert await local_store.list("", limit=limit) == sorted(keys)[:limit]


# -- durable directories --------------------------------------------------------------


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``os.fsync`` is called on, in order (a spy: a power cut is unobservable)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return synced


def test_new_root_directories_are_fsynced_into_their_parents(
    tmp_path: Path, fsynced: list[str]
) -> None:
    LocalFileStore(tmp_path / "a" / "b" / "root")

    assert (tmp_path / "a" / "b" / "root").is_dir()
    assert fsynced == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]


def test_existing_root_is_not_synced_again(tmp_path: Path, fsynced: list[str]) -> None:
    LocalFileStore(tmp_path)

    assert fsynced == []


async def test_key_directories_are_fsynced_into_their_parents(
    tmp_path: Path, fsynced: list[str]
) -> None:
    store = LocalFileStore(tmp_path)

    await store.create("archive/2026-11-27T17/1-1.json", b"{}")

    directories = [path for path in fsynced if not path.endswith(".osq-tmp")]
    assert directories == [
        str(tmp_path),  # archive/ made durable in the root
        str(tmp_path / "archive"),  # 2026-11-27T17/ in archive/
        str(tmp_path / "archive" / "2026-11-27T17"),  # the object's rename
    ]


# -- bounded lock waits ---------------------------------------------------------------


HOLDER = """
    import os, sys, anyio
    from osqueue_io.storage import LocalFileStore

    real_replace = os.replace

    def replace(source, target):
        # Inside the directory lock: stay here, holding it, until the test says "go".
        print("holding", os.getpid(), flush=True)
        sys.stdin.readline()
        real_replace(source, target)

    os.replace = replace

    async def main(root):
        store = LocalFileStore(root)
        current = await store.read("state")
        await store.update("state", b"written by the holder", current.version)
        print("done", flush=True)

    anyio.run(main, sys.argv[1])
"""


def lock_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "osqueue.storage.local" and record.levelno == logging.WARNING
    ]


async def test_write_blocked_by_a_frozen_holder_gives_up_naming_it(
    tmp_path: Path, children: list[Child], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="osqueue.storage.local")
    store = LocalFileStore(tmp_path, lock_timeout=0.3)
    await store.create("state", b"old")
    child = Child(HOLDER, str(tmp_path))
    children.append(child)
    word, pid = child.read_line().split()
    assert word == "holding"

    started = time.monotonic()
    with anyio.fail_after(CHILD_TIMEOUT), pytest.raises(WriteNotApplied) as raised:
        await store.create("other", b"mine")

    assert time.monotonic() - started >= 0.3  # it waited out its timeout, not less
    message = str(raised.value)
    assert f"pid {pid} on host " in message
    assert str(tmp_path / ".osq-lock") in message
    assert "is another broker frozen" in message
    assert "after waiting" in message
    warnings = lock_warnings(caplog)
    assert len(warnings) == 1
    assert f"pid {pid}" in warnings[0]
    assert str(tmp_path / ".osq-lock") in warnings[0]
    assert await store.read("other") is None

    child.send("go")
    assert child.read_line() == "done"
    assert child.finish() == 0
    with anyio.fail_after(CHILD_TIMEOUT):
        await store.create("other", b"mine")
    other, state = await store.read("other"), await store.read("state")
    assert other is not None
    assert other.data == b"mine"
    assert state is not None
    assert state.data == b"written by the holder"


async def test_delete_waits_for_the_directory_lock_like_a_write(
    tmp_path: Path, children: list[Child]
) -> None:
    """A delete never runs between another writer's check and its rename: it holds the
    same lock (a frozen holder makes it give up without deleting anything)."""
    store = LocalFileStore(tmp_path, lock_timeout=0.3)
    await store.create("state", b"old")  # the holder updates it, holding the lock
    await store.create("segment", b"old")
    child = Child(HOLDER, str(tmp_path))
    children.append(child)
    assert child.read_line().startswith("holding")

    with anyio.fail_after(CHILD_TIMEOUT), pytest.raises(WriteNotApplied, match="delete of"):
        await store.delete("segment")

    assert await store.read("segment") is not None
    child.send("go")
    assert child.read_line() == "done"
    assert child.finish() == 0
    await store.delete("segment")
    assert await store.read("segment") is None
    assert not (tmp_path / "segment").exists()


async def test_write_waiting_for_the_lock_proceeds_when_the_holder_lets_go(
    tmp_path: Path, children: list[Child]
) -> None:
    store = LocalFileStore(tmp_path, lock_timeout=CHILD_TIMEOUT)
    await store.create("state", b"old")
    child = Child(HOLDER, str(tmp_path))
    children.append(child)
    assert child.read_line().startswith("holding")

    async def release_the_holder() -> None:
        child.send("go")

    with anyio.fail_after(CHILD_TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(store.create, "other", b"mine")
            group.start_soon(release_the_holder)

    assert child.read_line() == "done"
    other = await store.read("other")
    assert other is not None
    assert other.data == b"mine"
    # The lock file now names the last holder: this process.
    assert (tmp_path / ".osq-lock").read_bytes().startswith(f"pid={os.getpid()} host=".encode())


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\x00 not a record" * 10_000,
        b"pid=1 host=" + b"h" * 10_000 + b"\n",
        b"pid=12345678901234567890 host=x\n",
        b"pid=1 host=evil\x1b[2J\n",
    ],
)
async def test_a_lock_file_holding_garbage_names_no_holder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    caplog.set_level(logging.WARNING, logger="osqueue.storage.local")
    store = LocalFileStore(tmp_path, lock_timeout=0.2)
    lock_path = tmp_path / ".osq-lock"
    lock_path.write_bytes(content)
    # flock locks belong to open file descriptions: this one excludes the store's own.
    holder = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with anyio.fail_after(CHILD_TIMEOUT), pytest.raises(WriteNotApplied) as raised:
            await store.create("state", b"x")
    finally:
        os.close(holder)

    message = str(raised.value)
    assert "an unknown holder (the lock file names none)" in message
    assert len(message) < 400
    assert all(len(warning) < 400 for warning in lock_warnings(caplog))
    assert await store.read("state") is None
    await store.create("state", b"x")  # the lock is free again


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), float("nan"), 10**400])
def test_lock_timeout_must_be_positive_and_finite(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        LocalFileStore(tmp_path, lock_timeout=timeout)


def test_lock_timeout_defaults_well_below_the_runtimes_storage_timeout(tmp_path: Path) -> None:
    assert LocalFileStore(tmp_path).lock_timeout == 10.0
