"""A backlog of ready jobs as a broker leaves it, written directly with the core's codec.

Pushing a million jobs one by one takes long; :func:`backlog_objects` builds the same
bytes in seconds: full segments of ``segment_jobs`` jobs (what the broker spills them
into, ``docs/architecture.md``, Segments) and a state object holding their references
and the rest of the jobs inline. ``segment_jobs=None`` builds a state holding every job
inline, as a broker that never spills (or one before segments) keeps it. Every job is
the same but for its id and ``seq``, so one job is encoded with
:func:`osqueue_core.encode_job` and the rest are formatted from it; a sample is checked
against ``encode_job``, and a segment against :func:`osqueue_core.decode_segment`. The
owner is a released broker at epoch 1, so the queue under test takes it over as it
would take over any stopped broker's queue.
"""

from __future__ import annotations

import time

import anyio

from osqueue_core import (
    DEFAULT_QUEUE,
    SCHEMA_VERSION,
    BrokerConfig,
    Job,
    JobSpec,
    Owner,
    SegmentGroup,
    SegmentRef,
    StateHeader,
    decode_segment,
    default_job_id,
    digest_of,
    encode_job,
    encode_ref,
    encode_segment,
    encode_state,
    segment_key,
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


def _fragments(jobs: int, payload: bytes, created_at: float) -> list[bytes]:
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
    return fragments


#: How many jobs a built segment holds: the broker's largest (what a rewrite makes).
SEGMENT_JOBS = BrokerConfig().segment_jobs


def backlog_objects(
    jobs: int, payload_size: int = 100, segment_jobs: int | None = SEGMENT_JOBS
) -> dict[str, bytes]:
    """The objects of a queue holding ``jobs`` ready jobs of ``payload_size``-byte
    payloads: its segments (``segment_jobs`` jobs each; None: none) and, last,
    its state object under :data:`STATE_KEY`."""
    payload = b"p" * payload_size
    created_at = round(time.time(), 3)
    fragments = _fragments(jobs, payload, created_at)
    objects: dict[str, bytes] = {}
    refs: list[bytes] = []
    spilled = 0
    prefix = BrokerConfig().segment_prefix
    while segment_jobs is not None and jobs - spilled >= segment_jobs:
        seqs = range(spilled, spilled + segment_jobs)
        key = segment_key(prefix, BUILDER.epoch, len(refs) + 1)
        groups = (SegmentGroup(DEFAULT_QUEUE, segment_jobs, 0, spilled, created_at),)
        data = encode_segment(key, groups, seqs, fragments[spilled : spilled + segment_jobs])
        ref = SegmentRef(key, digest_of(data), len(data), segment_jobs, (seqs[0], seqs[-1]), groups)
        if not refs:
            decode_segment(data, ref)  # raises if the built segment is not the core's
        objects[key] = data
        refs.append(encode_ref(ref))
        spilled += segment_jobs
    header = StateHeader(schema_version=SCHEMA_VERSION, revision=1, owner=BUILDER, next_seq=jobs)
    objects[STATE_KEY] = encode_state(header, fragments[spilled:], encoded_refs=b",".join(refs))
    return objects


def backlog_state(jobs: int, payload_size: int = 100) -> bytes:
    """The state object of :func:`backlog_objects` (its segments left out)."""
    return backlog_objects(jobs, payload_size)[STATE_KEY]


async def write_backlog(store: ObjectStore, jobs: int, payload_size: int = 100) -> int:
    """Create the backlog's objects on an empty ``store`` (segments first, the state
    last, as a broker would); returns the state object's size in bytes."""
    objects = backlog_objects(jobs, payload_size)
    state = objects.pop(STATE_KEY)
    keys = list(objects)
    for start in range(0, len(keys), 32):
        async with anyio.create_task_group() as tasks:
            for key in keys[start : start + 32]:
                tasks.start_soon(store.create, key, objects[key])
    await store.create(STATE_KEY, state)
    return len(state)
