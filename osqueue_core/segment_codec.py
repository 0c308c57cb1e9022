"""Segment objects: immutable, create-only objects of full ``ready`` job records.

Layout (compact, fields in this order; docs/state-format.md, "A segment object")::

    {"schema_version":3,"key":...,"groups":[[queue,count,top_priority,first_seq,since],...],
     "seqs":"<base64 of each position's seq, int64 little-endian>",
     "key_index":"<base64 of (hash, position) pairs>","jobs":[<fragment>,...]}

``key_index`` is omitted when no job has an idempotency key
(:mod:`osqueue_core.key_index`).

Records are sorted by (queue, priority descending, seq), so each queue's group is in
claim order, and each is exactly the cached fragment the state held (same bytes). A
segment read back is checked against its reference by :func:`decode_segment`
(``CorruptState`` naming the segment); a record becomes a ``Job`` only when needed
(:func:`segment_job`), so loading a segment costs one ``orjson.loads``.
:func:`decode_segment_keys` reads only the header's key index, for a broker that
needs a segment's keys and not its records (after a takeover).
"""

from __future__ import annotations

import base64
import binascii
import struct
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import orjson

from osqueue_core.codec import decode_job
from osqueue_core.errors import CorruptState
from osqueue_core.job import DEFAULT_QUEUE, Job, JobStatus
from osqueue_core.key_index import PAIR, KeyPair, decode_pairs, encode_pairs, key_pairs
from osqueue_core.quoting import quote
from osqueue_core.segment_refs import SegmentGroup, SegmentRef, digest_of, group_list

#: The schema version written into segment objects.
SEGMENT_SCHEMA = 3

_JOBS_MARKER = b',"jobs":['
_HEAD_FIELDS = {"schema_version", "key", "groups", "seqs", "key_index"}

#: Fields a segment record never carries (it is always ``ready`` and unfinished).
_NEVER_IN_SEGMENT = (
    "status",
    "claimed_by",
    "claimed_at",
    "finished_at",
    "archive_key",
    "cancel_requested",
    "result",
)


@attrs.frozen
class SegmentContents:
    """A segment read and checked against its reference: each position's ``seq``, each
    position's record as parsed JSON (made a ``Job`` only when the job is claimed,
    cancelled or inspected), and its key index."""

    seqs: array[int]
    records: list[dict[str, Any]]
    keys: list[KeyPair] = attrs.Factory(list)


# -- segment objects -----------------------------------------------------------------


def group_jobs(jobs: Iterable[Job]) -> tuple[list[Job], tuple[SegmentGroup, ...]]:
    """``jobs`` in segment order (queue, priority descending, seq) and their groups."""
    ordered = sorted(jobs, key=lambda j: (j.queue, -j.priority, j.seq))
    groups: list[SegmentGroup] = []
    start = 0
    for index in range(1, len(ordered) + 1):
        if index == len(ordered) or ordered[index].queue != ordered[start].queue:
            run = ordered[start:index]
            first = run[0]
            since = min(_ready_since(job) for job in run)
            groups.append(SegmentGroup(first.queue, len(run), first.priority, first.seq, since))
            start = index
    return ordered, tuple(groups)


def _ready_since(job: Job) -> float:
    at = job.ready_at
    return job.created_at if at is None else max(job.created_at, at)


def encode_segment(
    key: str,
    groups: Sequence[SegmentGroup],
    seqs: Sequence[int],
    fragments: Iterable[bytes],
    keys: Sequence[KeyPair] = (),
) -> bytes:
    """A segment object from its jobs' cached fragments, already in segment order, and
    its key index (:func:`~osqueue_core.key_index.key_pairs` of its keyed jobs)."""
    head: dict[str, Any] = {
        "schema_version": SEGMENT_SCHEMA,
        "key": key,
        "groups": [group_list(group) for group in groups],
        "seqs": base64.b64encode(struct.pack(f"<{len(seqs)}q", *seqs)).decode("ascii"),
    }
    if keys:
        head["key_index"] = base64.b64encode(encode_pairs(keys)).decode("ascii")
    return b"".join((orjson.dumps(head)[:-1], _JOBS_MARKER, b",".join(fragments), b"]}"))


def decode_segment(data: bytes, ref: SegmentRef) -> SegmentContents:
    """Check a segment object read back against ``ref`` and parse it (the records stay
    raw JSON: :func:`segment_job` makes a ``Job`` of one). Raises ``CorruptState``
    naming the segment."""
    where = f"segment {quote(ref.key)}"
    _check_bytes(data, ref)
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptState(f"{where} is not valid JSON: {exc}") from None
    try:
        return _check_segment(raw, ref)
    except (TypeError, KeyError, ValueError, AttributeError, binascii.Error) as exc:
        raise CorruptState(f"{where} does not parse: {exc}") from None


def decode_segment_keys(data: bytes, ref: SegmentRef) -> list[KeyPair]:
    """The key index of a segment read back, parsing its header only (the part before
    its records): the bytes are checked against ``ref`` as a whole, the header as
    :func:`decode_segment` checks it; the key index is bounded by ``ref.keyed`` and
    must be sorted, of distinct positions in range. (That its pairs match the records
    is checked when the whole segment is loaded.) Raises ``CorruptState``."""
    where = f"segment {quote(ref.key)}"
    _check_bytes(data, ref)
    cut = data.find(_JOBS_MARKER)
    try:
        raw = orjson.loads(data[:cut] + b"}") if cut > 0 else None
    except orjson.JSONDecodeError as exc:
        raise CorruptState(f"{where}: its header is not valid JSON: {exc}") from None
    try:
        _check_head(raw, ref, _HEAD_FIELDS)
        assert isinstance(raw, dict)
        return _key_index(raw, ref)
    except (TypeError, KeyError, ValueError, AttributeError, binascii.Error) as exc:
        raise CorruptState(f"{where} does not parse: {exc}") from None


def _check_bytes(data: bytes, ref: SegmentRef) -> None:
    if len(data) != ref.size or digest_of(data) != ref.digest:
        raise CorruptState(
            f"segment {quote(ref.key)} does not match its reference (size {len(data)}, "
            f"expected {ref.size}; or its digest differs): osqueue will not serve or write "
            "on it; restore the object from a backup"
        )


def _check_head(raw: Any, ref: SegmentRef, fields: set[str]) -> array[int]:
    """Everything in a segment's header but its key index; returns its seqs."""
    where = f"segment {quote(ref.key)}"
    if not isinstance(raw, dict) or raw.get("schema_version") != SEGMENT_SCHEMA:
        raise CorruptState(f"{where} is not a schema {SEGMENT_SCHEMA} segment object")
    if set(raw) - fields:
        raise CorruptState(f"{where} has unknown fields")
    if raw["key"] != ref.key:
        raise CorruptState(f"{where} names another key: {quote(raw['key'])}")
    if raw["groups"] != [group_list(group) for group in ref.groups]:
        raise CorruptState(f"{where}: its groups differ from its reference's")
    packed = base64.b64decode(raw["seqs"], validate=True)
    if len(packed) != 8 * ref.jobs:
        raise CorruptState(f"{where}: seqs hold {len(packed) // 8} positions, expected {ref.jobs}")
    return array("q", struct.unpack(f"<{ref.jobs}q", packed))


def _key_index(raw: dict[str, Any], ref: SegmentRef) -> list[KeyPair]:
    """The header's key index, checked against ``ref`` (its length before decoding)."""
    where = f"segment {quote(ref.key)}"
    text = raw.get("key_index")
    if text is None or not ref.keyed:
        if text is not None or ref.keyed:
            raise CorruptState(f"{where}: a key_index must list exactly its {ref.keyed} keyed jobs")
        return []
    if not isinstance(text, str) or len(text) != 4 * -(-PAIR.size * ref.keyed // 3):
        raise CorruptState(f"{where}: its key_index does not hold {ref.keyed} pairs")
    return decode_pairs(base64.b64decode(text, validate=True), ref.keyed, ref.jobs)


def _check_segment(raw: Any, ref: SegmentRef) -> SegmentContents:
    where = f"segment {quote(ref.key)}"
    seqs = _check_head(raw, ref, _HEAD_FIELDS | {"jobs"})
    records = raw["jobs"]
    if not isinstance(records, list) or len(records) != ref.jobs:
        raise CorruptState(f"{where}: expected {ref.jobs} job records")
    keyed: list[tuple[int, str, str]] = []
    dues: list[float] = []
    position = 0
    for group in ref.groups:
        previous: tuple[int, int] | None = None
        for _ in range(group.count):
            record = records[position]
            born = record["born"]
            if not isinstance(record, dict) or not isinstance(born, dict):
                raise CorruptState(f"{where}: position {position} is not a job record")
            if any(name in record for name in _NEVER_IN_SEGMENT):
                raise CorruptState(f"{where}: position {position} is not a ready job record")
            seq, queue = record["seq"], born.get("queue", DEFAULT_QUEUE)
            priority = born.get("priority", 0)
            if type(seq) is not int or seq != seqs[position] or queue != group.queue:
                raise CorruptState(f"{where}: position {position} has the wrong seq or queue")
            if type(priority) is not int or not isinstance(record["id"], str):
                raise CorruptState(f"{where}: position {position} has a malformed id or priority")
            order = (-priority, seq)
            if previous is None and order != (-group.top_priority, group.first_seq):
                raise CorruptState(f"{where}: group {quote(queue)} does not start as recorded")
            if previous is not None and order <= previous:
                raise CorruptState(f"{where}: position {position} is out of claim order")
            previous = order
            if "key" in born:
                if not isinstance(born["key"], str):
                    raise CorruptState(f"{where}: position {position} has a malformed key")
                keyed.append((position, queue, born["key"]))
            if (at := record_due(record, ref.key)) is not None:
                dues.append(at)
            position += 1
    if len(keyed) != ref.keyed or (min(seqs), max(seqs)) != ref.seqs:
        raise CorruptState(f"{where}: its keyed count or seq range differs from its reference's")
    # A window closing at a wrong ``max`` would make a job due early.
    if ((min(dues), max(dues)) if dues else None) != ref.due:
        raise CorruptState(f"{where}: its jobs' due range differs from its reference's")
    keys = _key_index(raw, ref)
    if keys != key_pairs(keyed):
        raise CorruptState(f"{where}: its key_index does not match its records")
    return SegmentContents(seqs, records, keys)


def record_due(record: dict[str, Any], key: str) -> float | None:
    """A segment record's due time (``retry_at``, else ``born.run_at``; None: none),
    checked to be a number (``CorruptState`` naming the segment)."""
    at = record.get("retry_at")
    if at is None:
        at = record["born"].get("run_at")
    if at is not None and type(at) not in (int, float):
        raise CorruptState(f"segment {quote(key)}: a due time that is not a number")
    return None if at is None else float(at)


def segment_job(record: dict[str, Any], key: str) -> Job:
    """The ``Job`` of one segment record (checked: a ready job)."""
    try:
        job = decode_job(record)
    except CorruptState as exc:
        raise CorruptState(f"segment {quote(key)}: {exc}") from None
    if job.status is not JobStatus.READY:
        raise CorruptState(f"segment {quote(key)}: job {quote(job.id)} is not ready")
    return job
