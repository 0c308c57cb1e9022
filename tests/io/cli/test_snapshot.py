"""``Snapshot.find`` finds a job spilled into a segment by its id, whether the id is a
single broker's (``<seq>-<epoch>``) or a group queue's (``<queue>/<seq>-<epoch>``)."""

from __future__ import annotations

import pytest

from osqueue_core import BrokerConfig
from osqueue_io import EmbeddedQueue
from osqueue_io.cli.snapshot import Snapshot
from osqueue_io.group.layout import queue_config, state_key
from osqueue_io.storage import open_store

pytestmark = pytest.mark.anyio

SPILL = 3
LEASE = 5.0


async def test_a_spilled_group_job_is_found_in_its_segment() -> None:
    store = open_store("memory://")
    config = queue_config(
        BrokerConfig(spill_jobs=SPILL, segment_jobs=SPILL, owner_lease=LEASE), "q1"
    )
    async with EmbeddedQueue(store, bytes, config=config) as queue:
        ids = [await queue.push(b"x", queue="q1") for _ in range(SPILL)]
        spilled = None
        for _ in range(200):  # the spill lands in the write after the pushes
            snapshot = await Snapshot.read(store, state_key("q1"))
            if snapshot.refs:
                spilled = snapshot
                break
            await queue.push(b"nudge", queue="q1")
        assert spilled is not None, "no spill"
    (ref,) = spilled.refs
    assert all(job_id.startswith("q1/") for job_id in ids)
    assert not {job.id for job in spilled.inline()} & set(ids)
    for job_id in ids:
        located = await spilled.find(job_id)
        assert located is not None, job_id
        assert located.job.id == job_id
        assert located.segment == ref.key
    assert await spilled.find("q1/999999999999-1") is None
    assert await spilled.find("q1/not-an-id") is None
