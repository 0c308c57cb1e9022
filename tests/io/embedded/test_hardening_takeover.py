"""Hole 2: a busy owner starved a takeover.

Two embedded queues on one directory: while the first kept writing back to back, the
second's takeover write kept losing (each of the owner's writes changes the version it
needs), and its open took 5 to 17 s, or gave up. Now the challenger, after losing once,
posts a takeover request; the busy owner reads it every ``takeover_check`` seconds and
pauses its writes once per request, and the challenger gets in.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from osqueue_core import BrokerConfig, BrokerReplaced, JobStatus, Phase
from osqueue_io import EmbeddedQueue
from osqueue_io.storage import Faults, FaultyStore, LocalFileStore

from .hardening import only_state, read_state, stored_jobs

pytestmark = pytest.mark.anyio

PUSHERS = 16
OWNER = BrokerConfig(takeover_check=0.2, retry_initial=0.01, retry_max=0.1)
CHALLENGER = BrokerConfig(takeover_timeout=60, heartbeat_timeout=60)


async def test_a_busy_owner_pauses_for_a_challenger_and_loses_nothing(tmp_path: Path) -> None:
    """The owner is kept busy by concurrent pushers. The challenger reaches the state
    through a store 20 ms slower than the owner's (latency on the state object only), so
    between its read and its write the owner always writes: its first takeover write
    loses by construction, and only the owner's pause lets it in. Then the owner's
    requests fail with ``BrokerReplaced`` and every push it acknowledged is in the
    challenger's state, ready to claim."""
    path = tmp_path / "queue"
    acked: list[str] = []
    replaced: list[BrokerReplaced] = []
    all_replaced = anyio.Event()

    async def push_until_replaced(owner: EmbeddedQueue[str], n: int) -> None:
        i = 0
        while True:
            try:
                acked.append(await owner.push(f"p{n}-{i}"))
            except BrokerReplaced as error:
                replaced.append(error)
                if len(replaced) == PUSHERS:
                    all_replaced.set()
                return
            i += 1

    slower = FaultyStore(LocalFileStore(path), Faults(latency=0.02, keys=only_state), seed=0)
    # The hang guard is well below the challenger's takeover_timeout: a challenger
    # starved until it gives up shows as a hang here, not as a slow success.
    with anyio.fail_after(30):
        async with (
            EmbeddedQueue(path, str, config=OWNER) as owner,
            anyio.create_task_group() as pushers,
        ):
            for n in range(PUSHERS):
                pushers.start_soon(push_until_replaced, owner, n)
            await owner.runtime.wait_until(lambda s: s.writes >= 50)
            async with EmbeddedQueue(slower, str, config=CHALLENGER) as challenger:
                await all_replaced.wait()  # every pusher ended on BrokerReplaced
                assert challenger.stats().takeover_conflicts >= 1, "it was starved at first"
                assert owner.stats().yields >= 1, "the owner paused for the request"
                with pytest.raises(BrokerReplaced) as late:
                    await owner.push("after the takeover")
                assert late.value.new_epoch == challenger.stats().epoch
                assert owner.runtime.broker_phase is Phase.FAILED

                state = await read_state(slower.inner)
                assert state.header.owner.epoch == challenger.stats().epoch
                jobs = await stored_jobs(slower.inner, state)  # segments included
                ready = {job.id for job in jobs if job.status is JobStatus.READY}
                assert set(acked) <= ready, "no acknowledged push was lost"
                job = await challenger.claim("w")
                assert job is not None
                assert job.id in ready
