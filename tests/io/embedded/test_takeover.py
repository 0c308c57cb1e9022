"""Two EmbeddedQueue processes on one local directory: the second takes over, the first
fails fast with a typed error, and no acknowledged job is lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from osqueue_core import BrokerConfig
from osqueue_io import EmbeddedQueue

pytestmark = pytest.mark.anyio

FIRST_BROKER = textwrap.dedent(
    """
    import sys, anyio
    from osqueue_io import EmbeddedQueue

    async def main(path):
        async with EmbeddedQueue(path, str) as queue:
            ids = [await queue.push(f"job-{i}") for i in range(3)]
            print("ready", *ids, flush=True)
            for line in sys.stdin:  # one command per line from the test
                try:
                    print("pushed", await queue.push("late"), flush=True)
                except Exception as error:
                    print("error", type(error).__name__, error.grpc_status, flush=True)
                    break
        print("exited", flush=True)

    anyio.run(main, sys.argv[1])
    """
)


async def test_second_process_takes_over_and_first_fails_fast(tmp_path: Path) -> None:
    path = str(tmp_path / "queue")
    # Line-by-line pipes to a child; reads go through a thread below.
    first = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", FIRST_BROKER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None
        assert first.stdin is not None
        ready = first.stdout.readline().split()
        assert ready[0] == "ready", ready
        acked = ready[1:]
        async with EmbeddedQueue(path, str, config=BrokerConfig(heartbeat_timeout=30)) as second:
            first.stdin.write("push\n")
            first.stdin.flush()
            with anyio.fail_after(20):
                answer = await anyio.to_thread.run_sync(first.stdout.readline)
            assert answer.split()[:3] == ["error", "BrokerReplaced", "UNAVAILABLE"], answer
            assert "exited" in await anyio.to_thread.run_sync(first.stdout.readline)
            claimed = []
            while (job := await second.claim("w")) is not None:
                claimed.append(job.id)
                await second.complete(job)
            assert claimed == acked, "the first broker's acknowledged jobs all survived"
        assert first.wait(timeout=20) == 0
    finally:
        first.kill()
        first.wait()
