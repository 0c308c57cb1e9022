"""Hole 8: storage that fails every write (a full disk) must be reported to callers as
``StorageUnavailable``, not as timeouts, and the queue must recover by itself.

Before the fix a full disk showed clients only timeouts: their requests were held while
the broker retried forever.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from osqueue_core import BrokerConfig, StorageUnavailable
from osqueue_io import EmbeddedQueue, open_store
from osqueue_io.storage import Faults, FaultyStore, LocalFileStore, ObjectStore

from .hardening import STATE_KEY, Gate, gated_store, read_state

pytestmark = pytest.mark.anyio

STALLS_FAST = BrokerConfig(stall_timeout=0.3, retry_initial=0.01, retry_max=0.05)


async def ride_out_an_outage(
    queue: EmbeddedQueue[str],
    start: Callable[[], None],
    end: Callable[[], None],
    store: ObjectStore,
    error_text: str,
) -> None:
    """Push, break storage with ``start()``, check that pushes get StorageUnavailable
    naming ``error_text``, mend it with ``end()``, and check that the queue recovers with
    every acknowledged job in the stored state."""
    acked = [await queue.push("before")]
    start()
    with anyio.fail_after(10):  # hang guard: the answer comes after stall_timeout
        with pytest.raises(StorageUnavailable) as held:
            await queue.push("held while storage fails")
        message = str(held.value)
        assert error_text in message, message
        assert held.value.retryable
        assert held.value.grpc_status == "UNAVAILABLE"
        assert queue.stats().stalled
        # While the stall lasts, new requests are answered at once, not held.
        with pytest.raises(StorageUnavailable):
            await queue.push("refused while stalled")
    end()
    with anyio.fail_after(10):
        # The broker kept retrying: the first write that lands ends the stall.
        await queue.runtime.wait_until(lambda s: not s.stalled)
        acked += [await queue.push(f"after {i}") for i in range(3)]
    stored = {job.id for job in (await read_state(store)).jobs}
    assert set(acked) <= stored, "nothing acknowledged was lost"


async def test_writes_failing_for_stall_timeout_answer_storage_unavailable_then_recover() -> None:
    """FaultyStore refuses every write (``write_not_applied``) once the queue is open."""
    store = FaultyStore(open_store("memory://"), Faults(), seed=3)

    def fail_all_writes() -> None:
        store.faults = Faults(write_not_applied=1.0)

    def mend() -> None:
        store.faults = Faults()

    async with EmbeddedQueue(store, str, config=STALLS_FAST) as queue:
        await ride_out_an_outage(
            queue, fail_all_writes, mend, store.inner, "injected fault: write_not_applied"
        )


async def test_a_real_no_space_error_is_named_to_callers_then_recovered(tmp_path: Path) -> None:
    """A real ENOSPC from the kernel, without root: the local store writes each new state
    to ``<dir>/.osq-tmp`` before renaming it into place, and opening that name follows a
    symlink, so a symlink to ``/dev/full`` makes every state write fail exactly as on a
    full disk (reads keep working); removing it frees the "disk"."""
    root = tmp_path / "queue"
    store = LocalFileStore(root)
    temp = root / ".osq-tmp"

    def fill_disk() -> None:
        temp.unlink(missing_ok=True)
        os.symlink("/dev/full", temp)

    def free_disk() -> None:
        temp.unlink()

    async with EmbeddedQueue(store, str, config=STALLS_FAST) as queue:
        await ride_out_an_outage(queue, fill_disk, free_disk, store, "No space left on device")
    assert (root / STATE_KEY).is_file()


async def test_a_write_that_hangs_for_stall_timeout_answers_storage_unavailable() -> None:
    """The other half of hole 8: storage that neither fails nor answers (a hung mount, a
    black-holed connection; here a write held at a gate). After ``stall_timeout`` the
    held push is answered ``StorageUnavailable``, whose message must say what is wrong;
    there is no storage error to quote, so quoting "the last storage error" gives an
    empty string. When the write lands, the queue recovers."""
    gate = Gate()
    store = gated_store(open_store("memory://"), gate)
    async with EmbeddedQueue(store, str, config=STALLS_FAST) as queue:
        before = await queue.push("before")
        gate.close()
        with anyio.fail_after(10):
            with pytest.raises(StorageUnavailable) as held:
                await queue.push("held by a write that hangs")
            assert gate.held == 1
            gate.open()
            await queue.runtime.wait_until(lambda s: not s.stalled)
            after = await queue.push("after")
        stored = {job.id for job in (await read_state(store.inner)).jobs}
        assert {before, after} <= stored
        message = str(held.value)
        assert "('')" not in message, f"the message names no cause: {message}"
