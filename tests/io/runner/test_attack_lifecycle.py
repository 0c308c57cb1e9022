"""Attacks on ``run_worker`` (issue 9): handlers that misbehave."""

from __future__ import annotations

import anyio
import pytest

from osqueue_io import ClaimedJob, EmbeddedQueue, run_worker

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0


async def test_a_handler_raising_system_exit_leaves_no_job_claimed() -> None:
    async with EmbeddedQueue("memory://", bytes, worker_id="w") as queue:
        job_id = await queue.push(b"exit")

        async def handler(job: ClaimedJob[bytes]) -> None:
            raise SystemExit(3)

        # Raising it on is fine (bare or in a group); leaving the job held is not.
        with pytest.raises((SystemExit, BaseExceptionGroup)), anyio.fail_after(TIMEOUT):
            await run_worker(queue, handler, poll=0.5)
        # The release may serve the worker's own waiting claim before that claim is
        # withdrawn; the job then comes back when the grant is taken back (after the
        # write in flight lands), so wait for the broker to hold nothing claimed.
        with anyio.fail_after(TIMEOUT):
            await queue.runtime.wait_until(lambda stats: stats.claimed == 0)
        info = await queue.get(job_id)
        assert info.holder is None, f"job still {info.status}, held by {info.holder!r}"
