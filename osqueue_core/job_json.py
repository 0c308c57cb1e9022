"""A job's JSON fragment, written and read by hand: the hot path of every write and of
every job claimed from a segment.

The layout is the one the codec's cattrs converter gives a :class:`Job` (fields in
declaration order, fields at their default omitted, the payload base64 under ``data``;
docs/state-format.md). cattrs stays the reference and the checked path: it builds its
functions generically, which cost ~1.7 µs to encode a job and ~7 µs to structure one,
more than the rest of the broker spends on most operations. Here:

* :func:`encode_job` gives **the same bytes** as the converter for every ``Job``;
* :func:`job_from_record` gives **the same** ``Job`` as the converter for a plain record
  (every field of the right JSON type, no unknown field) and None for anything else,
  which the caller then hands to the converter: a damaged record gets the converter's
  path-level error message, exactly as before.

tests/core/test_job_json.py checks both against the converter over generated jobs and
damaged records.
"""

from __future__ import annotations

import binascii
from typing import Any

import attrs
import orjson

from osqueue_core.job import DEFAULT_QUEUE, Job, JobSpec, JobStatus

_READY = JobStatus.READY
_STATUSES = {status.value: status for status in JobStatus}
#: The keys a job record and its ``born`` may have: the fields, the payload as "data".
_JOB_FIELDS = frozenset(field.name for field in attrs.fields(Job))
_BORN_FIELDS = frozenset(
    "data" if field.name == "payload" else field.name for field in attrs.fields(JobSpec)
)


def right_sized(data: bytes) -> bytes:
    """A copy of ``data`` that takes only the memory its length needs.

    ``orjson.dumps`` returns small results in an over-allocated buffer (about 4 KB
    whatever their length): a cache that keeps them for long (a fragment per job)
    keeps a copy instead, ~200 bytes for a job with a 100-byte payload."""
    return bytes(memoryview(data))


def _base64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def encode_job(job: Job) -> bytes:
    """One job's JSON fragment, as it appears in the state and archive objects
    (right-sized: the job table caches it for the job's life)."""
    born = job.born
    spec: dict[str, Any] = {"data": _base64(born.payload), "created_at": born.created_at}
    if born.queue != DEFAULT_QUEUE:
        spec["queue"] = born.queue
    if born.priority != 0:
        spec["priority"] = born.priority
    if born.run_at is not None:
        spec["run_at"] = born.run_at
    if born.key is not None:
        spec["key"] = born.key
    if born.max_attempts is not None:
        spec["max_attempts"] = born.max_attempts
    # Field by field, unrolled: a loop over the names with getattr costs 40% more.
    record: dict[str, Any] = {"id": job.id, "seq": job.seq, "born": spec}
    if job.status is not _READY:
        record["status"] = job.status.value
    if job.attempts != 0:
        record["attempts"] = job.attempts
    if job.claimed_by is not None:
        record["claimed_by"] = job.claimed_by
    if job.claimed_at is not None:
        record["claimed_at"] = job.claimed_at
    if job.finished_at is not None:
        record["finished_at"] = job.finished_at
    if job.archive_key is not None:
        record["archive_key"] = job.archive_key
    if job.last_error is not None:
        record["last_error"] = job.last_error
    if job.retry_at is not None:
        record["retry_at"] = job.retry_at
    if job.cancel_requested:
        record["cancel_requested"] = True
    if job.result is not None:
        record["result"] = _base64(job.result)
    return right_sized(orjson.dumps(record))


class _NotPlain(Exception):
    """A record this module leaves to the converter (it may still be valid)."""


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise _NotPlain


def _number(value: Any) -> float | None:
    # The converter's float: an int or a float, as a float (never a bool).
    kind = type(value)
    if kind is float or value is None:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return float(value)
    raise _NotPlain


def _count(value: Any) -> int | None:
    if value is None or type(value) is int:
        return value
    raise _NotPlain


def _bytes(value: Any) -> bytes:
    # base64.b64decode(value, validate=True), which the converter uses, is exactly this.
    if type(value) is not str:
        raise _NotPlain
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise _NotPlain from None


def _spec(born: Any) -> JobSpec:
    if type(born) is not dict:
        raise _NotPlain
    if len(born) == 2:  # the common case: every field but these at its default
        created_at = born.get("created_at")
        if type(created_at) is not float or "data" not in born:
            raise _NotPlain
        return JobSpec(_bytes(born["data"]), created_at)
    if not born.keys() <= _BORN_FIELDS:
        raise _NotPlain
    created_at = _number(born.get("created_at"))
    queue = born.get("queue", DEFAULT_QUEUE)
    priority = born.get("priority", 0)
    if created_at is None or type(queue) is not str or type(priority) is not int:
        raise _NotPlain
    return JobSpec(
        _bytes(born.get("data")),
        created_at,
        queue,
        priority,
        _number(born.get("run_at")),
        _text(born.get("key")),
        _count(born.get("max_attempts")),
    )


def job_from_record(record: Any) -> Job | None:
    """The ``Job`` of a parsed job fragment, as the converter would structure it; None
    when the record is not plain (let the converter structure it, or say what is
    wrong). Nothing is validated beyond types: the codec checks ranges after."""
    if type(record) is not dict:
        return None
    get = record.get
    try:
        if len(record) == 3:  # the common case: a ready job that never ran
            job_id, seq = get("id"), get("seq")
            if type(job_id) is not str or type(seq) is not int or "born" not in record:
                return None
            return Job(job_id, seq, _spec(record["born"]))
        if not record.keys() <= _JOB_FIELDS:
            return None
        job_id = get("id")
        seq = get("seq")
        status = get("status", "ready")
        attempts = get("attempts", 0)
        cancel_requested = get("cancel_requested", False)
        if (
            type(job_id) is not str
            or type(seq) is not int
            or type(status) is not str
            or type(attempts) is not int
            or type(cancel_requested) is not bool
            or status not in _STATUSES
        ):
            return None
        result = get("result")
        return Job(
            job_id,
            seq,
            _spec(get("born")),
            _STATUSES[status],
            attempts,
            _text(get("claimed_by")),
            _number(get("claimed_at")),
            _number(get("finished_at")),
            _text(get("archive_key")),
            _text(get("last_error")),
            _number(get("retry_at")),
            cancel_requested,
            None if result is None else _bytes(result),
        )
    except _NotPlain:
        return None
