"""``osqueue stats`` counts untouched jobs of a delayed segment by its due range: all
delayed before it begins, all ready once it has passed, and in between each job by
its own due time (the only case that reads the segment)."""

from __future__ import annotations

import time

import pytest

from osqueue_core import BrokerConfig
from osqueue_io import EmbeddedQueue
from osqueue_io.cli.snapshot import Snapshot
from osqueue_io.cli.stats import state_summary
from osqueue_io.storage import open_store

pytestmark = pytest.mark.anyio

DELAYS = (1000.0, 2000.0, 3000.0)


async def test_a_delayed_segment_is_judged_by_its_due_range() -> None:
    store = open_store("memory://")
    config = BrokerConfig(spill_jobs=len(DELAYS), segment_jobs=len(DELAYS))
    before = time.time()
    async with EmbeddedQueue(store, bytes, config=config) as queue:
        ids = [await queue.push(b"x", queue="mail", delay=delay) for delay in DELAYS]
        with_refs = None
        for _ in range(200):  # the spill lands in the write after the pushes
            snapshot = await Snapshot.read(store, "state.json")
            if snapshot.refs:
                with_refs = snapshot
                break
            await queue.push(b"nudge", queue="other")
        assert with_refs is not None, "no spill"
    (ref,) = with_refs.refs
    assert ref.due is not None
    assert before + DELAYS[0] <= ref.due[0] < ref.due[1] <= time.time() + DELAYS[-1]
    assert ref.jobs == len(ids)

    assert await _mail(with_refs, ref.due[0] - 1) == (0, 3, 3)
    # Inside the window: the first job is due, the others are not.
    assert await _mail(with_refs, ref.due[0] + 1) == (1, 2, 3)
    assert await _mail(with_refs, ref.due[1] - 1) == (2, 1, 3)
    assert await _mail(with_refs, ref.due[1]) == (3, 0, 3)


async def _mail(snapshot: Snapshot, now: float) -> tuple[int, int, int]:
    """(ready, delayed, untouched) of queue ``mail`` at ``now``."""
    summary = await state_summary(snapshot, now)
    (line,) = [line for line in summary["queues"] if line["queue"] == "mail"]
    assert summary["delayed"] >= line["delayed"]
    return line["ready"], line["delayed"], line["untouched"]
