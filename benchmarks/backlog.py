"""A state object holding a backlog of ready jobs, written directly with the core's codec.

Pushing a million jobs one by one would take hours while every commit rewrites the whole
state; :func:`backlog_state` builds the same bytes in seconds. Every job is the same
but for its id and ``seq``, so one job is encoded with :func:`osqueue_core.encode_job`
and the rest are formatted from it; a sample of them is checked against ``encode_job``.
The owner is a released broker at epoch 1, so the queue under test takes it over as it
would take over any stopped broker's queue.
"""

from __future__ import annotations

import time

from osqueue_core import (
    SCHEMA_VERSION,
    Job,
    JobSpec,
    Owner,
    StateHeader,
    default_job_id,
    encode_job,
    encode_state,
)
from osqueue_io.storage import ObjectStore

STATE_KEY = "state.json"
#: The broker whose state it is: released, so a takeover needs no pause.
BUILDER = Owner("benchmark-builder", "0", 1, released=True)
_ID_MARK = "IDMARK"
_SEQ_MARK = 987654321987


def _job(index: int, payload: bytes, created_at: float) -> Job:
    return Job(
        id=default_job_id(BUILDER.epoch, index),
        seq=index,
        born=JobSpec(payload=payload, created_at=created_at),
    )


def backlog_state(jobs: int, payload_size: int = 100) -> bytes:
    """A state object with ``jobs`` ready jobs of ``payload_size``-byte payloads."""
    payload = b"p" * payload_size
    created_at = round(time.time(), 3)
    template = encode_job(
        Job(id=_ID_MARK, seq=_SEQ_MARK, born=JobSpec(payload=payload, created_at=created_at))
    )
    before_id, rest = template.split(_ID_MARK.encode())
    between, after_seq = rest.split(str(_SEQ_MARK).encode())
    pattern = before_id.replace(b"%", b"%%") + b"%s" + between.replace(b"%", b"%%") + b"%d"
    pattern += after_seq.replace(b"%", b"%%")
    fragments = [pattern % (default_job_id(BUILDER.epoch, i).encode(), i) for i in range(jobs)]
    for index in {0, jobs // 2, jobs - 1} if jobs else ():
        expected = encode_job(_job(index, payload, created_at))
        if fragments[index] != expected:
            raise AssertionError(f"templated job {index} differs from encode_job's")
    header = StateHeader(schema_version=SCHEMA_VERSION, revision=1, owner=BUILDER, next_seq=jobs)
    return encode_state(header, fragments)


async def write_backlog(store: ObjectStore, jobs: int, payload_size: int = 100) -> int:
    """Create the state object on an empty ``store``; returns its size in bytes."""
    data = backlog_state(jobs, payload_size)
    await store.create(STATE_KEY, data)
    return len(data)
