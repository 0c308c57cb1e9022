"""Job handlers for the runner's process tests, run as ``python -m osqueue_io.worker
tests.io.runner.handlers:NAME``, and steered through files.

A job's payload is the path of a control directory (bytes: ``job.item.decode()``). Each
handler creates ``started-<job id>`` there when it begins, so the test can wait until
handlers are mid-work by looking for those files.
"""

from __future__ import annotations

import threading
from pathlib import Path

import anyio

from osqueue_io import ClaimedJob

#: Not callable: the command line must refuse it.
NOT_A_FUNCTION = 42


def _mark(job: ClaimedJob[bytes], what: str) -> Path:
    control = Path(job.item.decode())
    (control / f"{what}-{job.id}").touch()
    return control


async def wait_for_go(job: ClaimedJob[bytes]) -> bytes:
    """Run until the test creates ``go``, then return a result naming the job."""
    control = _mark(job, "started")
    # The test creates the file from another process: polling it is the handshake.
    while not (control / "go").exists():  # noqa: ASYNC110
        await anyio.sleep(0.01)
    _mark(job, "finished")
    return b"done " + job.id.encode()


async def never_finishes(job: ClaimedJob[bytes]) -> None:
    """Wait forever; leave ``interrupted-<id>`` behind when cancelled."""
    _mark(job, "started")
    try:
        await anyio.sleep_forever()
    finally:
        _mark(job, "interrupted")


def never_finishes_in_a_thread(job: ClaimedJob[bytes]) -> None:
    """A plain function that blocks its thread forever: nothing can interrupt it."""
    _mark(job, "started")
    threading.Event().wait()
