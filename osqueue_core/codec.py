"""The JSON encoding of the state object and of archive objects (cattrs + orjson).

Layout (see docs/state-format.md)::

    {"schema_version":3,"revision":7,"owner":{...},"next_seq":12,"keys":[...],
     "segment_floor":1,"segments":[<ref>,...],
     "jobs":[{"id":...,"seq":...,"born":{...},"status":...},...]}

Each job keeps what it was born with (``born``: payload, queue, priority, run-at, key,
attempt limit) apart from what changes while it lives (the fields beside it). Version 1
objects (the job's ``data`` and ``created_at`` at its top level, no ``keys``) and
version 2 objects (no segments) are still read, and rewritten as version 3 by the next
write. ``segments`` holds references to segment objects
(:mod:`osqueue_core.segment_refs`); ``segment_floor`` and ``segments`` are omitted at
their defaults.

``jobs`` comes last so a state can be assembled from per-job fragments that are
encoded once and cached: the cost of a write tracks the jobs a batch changed, plus a
``bytes.join`` of the rest. The encoding is canonical (fixed field order, defaults
omitted), so ``encode(decode(b)) == b`` for every object osqueue wrote.

Decoding validates everything and raises :class:`~osqueue_core.errors.CorruptState`
or :class:`~osqueue_core.errors.UnsupportedSchema`; unknown fields are refused, not
dropped, so a broker never rewrites what it could not fully read.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter

from osqueue_core.errors import CorruptState, InvalidArgument, UnsupportedSchema
from osqueue_core.job import Job, JobSpec, JobStatus
from osqueue_core.limits import (
    MAX_COUNTER,
    MAX_ERROR_LENGTH,
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_LEASE,
    MAX_PRIORITY,
    MIN_LEASE,
    check_queue_name,
)
from osqueue_core.owner import Owner
from osqueue_core.quoting import quote
from osqueue_core.remembered import RememberedKey, encode_remembered
from osqueue_core.retry import MAX_ATTEMPTS
from osqueue_core.segment_refs import SegmentRef, decode_refs

#: The newest state layout this code reads and the one it writes.
SCHEMA_VERSION = 4
#: The first layout with segments (schema 3) and with the owner's lease (schema 4).
SEGMENTS_SCHEMA = 3
LEASE_SCHEMA = 4


_JOBS_MARKER = b',"jobs":['
_SEGMENTS_MARKER = b',"segments":['


@attrs.frozen
class StateHeader:
    """Everything in the state object except the jobs."""

    schema_version: int
    revision: int
    owner: Owner
    next_seq: int
    #: Idempotency keys of jobs that left the state (:mod:`osqueue_core.remembered`).
    keys: tuple[RememberedKey, ...] = ()
    #: The first epoch of this queue's life (schema 3; the orphan sweep's lower bound).
    segment_floor: int = 1


@attrs.frozen
class DecodedState:
    """A parsed and validated state object."""

    header: StateHeader
    jobs: list[Job]
    #: References to the segments holding the untouched jobs (schema 3).
    segments: list[SegmentRef] = attrs.Factory(list)


def _decode_bytes(value: Any, _: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from None


def _strict_int(value: Any, _: Any) -> int:
    # cattrs would accept "3" or 3.7 or True for an int; a state object never has them.
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _strict_bool(value: Any, _: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _strict_float(value: Any, _: Any) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _make_converter() -> cattrs.Converter:
    conv = make_converter(omit_if_default=True, forbid_extra_keys=True)
    conv.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode("ascii"))
    conv.register_structure_hook(bytes, _decode_bytes)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(float, _strict_float)
    # The payload is called "data" in JSON, as in the original Go osqueue.
    conv.register_unstructure_hook(
        JobSpec,
        make_dict_unstructure_fn(
            JobSpec, conv, _cattrs_omit_if_default=True, payload=override(rename="data")
        ),
    )
    conv.register_structure_hook(
        JobSpec,
        make_dict_structure_fn(
            JobSpec, conv, _cattrs_forbid_extra_keys=True, payload=override(rename="data")
        ),
    )
    return conv


_converter = _make_converter()


def right_sized(data: bytes) -> bytes:
    """A copy of ``data`` that takes only the memory its length needs.

    ``orjson.dumps`` returns small results in an over-allocated buffer (about 4 KB
    whatever their length): a cache that keeps them for long (a fragment per job)
    keeps a copy instead, ~200 bytes for a job with a 100-byte payload."""
    return bytes(memoryview(data))


def encode_job(job: Job) -> bytes:
    """One job's JSON fragment, as it appears in the state and archive objects
    (right-sized: the job table caches it for the job's life)."""
    return right_sized(orjson.dumps(_converter.unstructure(job, Job)))


def decode_job(raw: Any) -> Job:
    """One job from its parsed JSON (a segment record), validated like a state's."""
    job: Job = _structure(raw, Job, "$")
    where = f"job {quote(job.id)}"
    if not 0 < len(job.id) <= MAX_ID_LENGTH or not 0 <= job.seq < MAX_COUNTER:
        raise CorruptState(f"{where}: id length or seq out of range")
    if not 0 <= job.attempts < MAX_COUNTER:
        raise CorruptState(f"{where}: attempts out of range")
    if job.last_error is not None and len(job.last_error) > MAX_ERROR_LENGTH:
        raise CorruptState(f"{where}: last_error longer than {MAX_ERROR_LENGTH}")
    _validate_born(job.born, where)
    _validate_status(job, where)
    return job


def encode_state(
    header: StateHeader,
    job_fragments: Iterable[bytes],
    encoded_keys: bytes | None = None,
    encoded_refs: bytes = b"",
) -> bytes:
    """The state object from its header and the already-encoded jobs, in order.

    ``encoded_keys``, when given, replaces ``header.keys``: the remembered keys already
    encoded and comma-joined (:meth:`RememberedKeys.encoded`), so a write does not
    re-encode them. ``encoded_refs`` are the segment references, encoded and
    comma-joined (:func:`~osqueue_core.segment_refs.encode_ref`)."""
    if encoded_keys is None:
        encoded_keys = b",".join(encode_remembered(entry) for entry in header.keys)
    bare = attrs.evolve(header, keys=(), segment_floor=1)
    parts = [orjson.dumps(_converter.unstructure(bare, StateHeader))[:-1]]
    if encoded_keys:
        parts += [b',"keys":[', encoded_keys, b"]"]
    if header.segment_floor != 1:
        parts.append(b',"segment_floor":%d' % header.segment_floor)
    if encoded_refs:
        parts += [_SEGMENTS_MARKER, encoded_refs, b"]"]
    parts.append(b"}")
    return _with_jobs(b"".join(parts), job_fragments)


def encode_archive(key: str, job_fragments: Iterable[bytes]) -> bytes:
    """An archive object: finished jobs with the key they were archived under."""
    head = orjson.dumps({"schema_version": SCHEMA_VERSION, "key": key})
    return _with_jobs(head, job_fragments)


#: What identifies a job in an archive object: its id, seq and payload.
ArchivedJob = tuple[str, int, bytes]


def _archived_payload(job: Any) -> Any:
    born = job.get("born")
    return born["data"] if isinstance(born, dict) else job["data"]


def decode_archive_jobs(data: bytes) -> list[ArchivedJob] | None:
    """The jobs of an archive object as (id, seq, payload), in order; None when ``data``
    is not an archive object this code can read (never raises).

    Used to tell whether an archive key that already exists holds our jobs (an earlier
    attempt of the same write landed) or somebody else's (a key reused after the state
    was restored from a backup): ids, seqs and payloads never change once a job exists,
    while the rest of its encoding may differ between osqueue versions.
    """
    try:
        raw = orjson.loads(data)
        jobs = raw["jobs"]
        found = [
            (job["id"], job["seq"], base64.b64decode(_archived_payload(job), validate=True))
            for job in jobs
        ]
    except (
        orjson.JSONDecodeError,
        TypeError,
        KeyError,
        ValueError,
        AttributeError,
        binascii.Error,
    ):
        return None
    if not all(isinstance(i, str) and type(s) is int for i, s, _ in found):
        return None
    return found


def _with_jobs(head: bytes, job_fragments: Iterable[bytes]) -> bytes:
    # One join over head, fragments and separators: the state is copied once, not twice.
    parts = [head[:-1], _JOBS_MARKER]
    for fragment in job_fragments:
        parts.append(fragment)
        parts.append(b",")
    if len(parts) > 2:
        parts.pop()
    parts.append(b"]}")
    return b"".join(parts)


def _load_object(data: bytes) -> dict[str, Any]:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptState(f"the state object is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CorruptState("the state object is not a JSON object")
    version = raw.get("schema_version")
    if type(version) is not int or version < 1:
        raise CorruptState(f"the state object has no valid schema_version (found {version!r})")
    if version > SCHEMA_VERSION:
        raise UnsupportedSchema(version, SCHEMA_VERSION)
    return raw


def _structure(raw: Any, cls: type[Any], what: str) -> Any:
    try:
        return _converter.structure(raw, cls)
    except Exception as exc:  # cattrs raises ClassValidationError and friends
        detail = "; ".join(cattrs.transform_error(exc, path=what))
        raise CorruptState(f"the state object does not parse: {detail}") from None


def peek_owner(data: bytes) -> Owner | None:
    """The owner of a state object of any schema version, if it can be made out.

    Used when a state is too new to decode: the owner record is the one part every
    schema keeps, and it tells an old broker who replaced it.
    """
    try:
        raw = orjson.loads(data)
        owner = raw["owner"]
        identity, epoch = owner["identity"], owner["epoch"]
        address = owner.get("address")
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
        return None
    if not isinstance(identity, str) or type(epoch) is not int:
        return None
    incarnation = owner.get("incarnation")
    return Owner(
        identity,
        incarnation if isinstance(incarnation, str) else "",
        epoch,
        address if isinstance(address, str) else None,
    )


def decode_header(data: bytes) -> StateHeader:
    """Only the header, cheaply: enough to check ownership and revision.

    Objects osqueue wrote have the segment references, then the jobs, last, so the
    header is parsed without parsing either; anything else falls back to a full decode.
    """
    cuts = [at for at in (data.find(_SEGMENTS_MARKER), data.find(_JOBS_MARKER)) if at > 0]
    if cuts:
        cut = min(cuts)
        try:
            raw = orjson.loads(data[:cut] + b"}")
        except orjson.JSONDecodeError:
            raw = None
        if isinstance(raw, dict):
            version = raw.get("schema_version")
            if type(version) is int and version > SCHEMA_VERSION:
                raise UnsupportedSchema(version, SCHEMA_VERSION)
            if version in (1, 2, 3, SCHEMA_VERSION):
                if version < SEGMENTS_SCHEMA and "segment_floor" in raw:
                    raise CorruptState(f"the state object (schema {version}) has segment_floor")
                header: StateHeader = _structure(raw, StateHeader, "$")
                _check_lease(header, version)
                return header
    return decode_state(data).header


def decode_state(data: bytes) -> DecodedState:
    """Parse and validate a whole state object."""
    raw = _load_object(data)
    if "jobs" not in raw or not isinstance(raw["jobs"], list):
        raise CorruptState("the state object has no jobs list")
    jobs_raw = raw.pop("jobs")
    refs_raw = raw.pop("segments", None)
    version = raw["schema_version"]
    if version < SEGMENTS_SCHEMA and (refs_raw is not None or "segment_floor" in raw):
        raise CorruptState(f"the state object (schema {version}) has segment fields")
    if version == 1:
        if "keys" in raw:
            raise CorruptState("the state object (schema 1) has a keys list")
        jobs_raw = [_upgrade_job(job) for job in jobs_raw]
    header: StateHeader = _structure(raw, StateHeader, "$")
    _check_lease(header, version)
    jobs: list[Job] = _structure(jobs_raw, list[Job], "$.jobs")
    _validate(header, jobs)
    refs = [] if refs_raw is None else decode_refs(refs_raw, header.next_seq)
    if refs_raw is not None and not refs:
        raise CorruptState("the state object has an empty segments list (omit it)")
    return DecodedState(header, jobs, refs)


def _check_lease(header: StateHeader, version: int) -> None:
    lease = header.owner.lease
    if lease is None:
        return
    if version < LEASE_SCHEMA:
        raise CorruptState(f"the state object (schema {version}) has an owner lease")
    if not MIN_LEASE <= lease <= MAX_LEASE:
        raise CorruptState(f"the owner's lease is outside [{MIN_LEASE:g}, {MAX_LEASE:g}] seconds")


def _upgrade_job(job: Any) -> Any:
    """A schema 1 job in the schema 2 layout: its payload and creation time move into
    ``born``. Anything odd is left for validation to refuse."""
    if not isinstance(job, dict) or "born" in job:
        return {**job, "born": "not allowed in schema 1"} if isinstance(job, dict) else job
    upgraded = dict(job)
    born = {name: upgraded.pop(name) for name in ("data", "created_at") if name in upgraded}
    upgraded["born"] = born
    return upgraded


def _validate(header: StateHeader, jobs: list[Job]) -> None:
    if header.revision < 1 or header.owner.epoch < 1 or header.next_seq < 0:
        raise CorruptState("the state object has a revision or epoch below 1 or next_seq below 0")
    if max(header.revision, header.owner.epoch, header.next_seq) >= MAX_COUNTER:
        raise CorruptState(
            f"the state object's revision, epoch or next_seq reaches {MAX_COUNTER}: "
            "no broker can count past it"
        )
    if not 1 <= header.segment_floor <= header.owner.epoch:
        raise CorruptState("the state object's segment_floor is outside [1, owner.epoch]")
    if not header.owner.identity or not header.owner.incarnation:
        raise CorruptState("the state object's owner has an empty identity or incarnation")
    remembered: set[tuple[str, str]] = set()
    for entry in header.keys:
        _check_queue(entry.queue, "a remembered key")
        if not 0 < len(entry.key) <= MAX_KEY_LENGTH or not 0 < len(entry.job_id) <= MAX_ID_LENGTH:
            raise CorruptState("a remembered key or its job id has an invalid length")
        if (entry.queue, entry.key) in remembered:
            raise CorruptState(f"remembered key {quote(entry.key)} appears twice")
        remembered.add((entry.queue, entry.key))
    ids: set[str] = set()
    seqs: set[int] = set()
    keys: set[tuple[str, str]] = set()
    for job in jobs:
        where = f"job {quote(job.id)}"
        if job.id in ids or job.seq in seqs:
            raise CorruptState(f"{where}: duplicate id or seq")
        ids.add(job.id)
        seqs.add(job.seq)
        if not 0 < len(job.id) <= MAX_ID_LENGTH:
            raise CorruptState(f"{where}: id length outside 1..{MAX_ID_LENGTH}")
        if not 0 <= job.seq < header.next_seq:
            raise CorruptState(f"{where}: seq {job.seq} outside [0, next_seq)")
        if not 0 <= job.attempts < MAX_COUNTER:
            raise CorruptState(f"{where}: attempts out of range")
        _validate_born(job.born, where)
        if job.born.key is not None:
            if (job.queue, job.born.key) in keys:
                raise CorruptState(f"{where}: its key is also another job's in its queue")
            keys.add((job.queue, job.born.key))
        if job.last_error is not None and len(job.last_error) > MAX_ERROR_LENGTH:
            raise CorruptState(f"{where}: last_error longer than {MAX_ERROR_LENGTH}")
        _validate_status(job, where)


def _check_queue(name: str, where: str) -> None:
    try:
        check_queue_name(name)
    except InvalidArgument:
        raise CorruptState(f"{where}: invalid queue name {quote(name)}") from None


def _validate_born(born: JobSpec, where: str) -> None:
    _check_queue(born.queue, where)
    if not -MAX_PRIORITY <= born.priority <= MAX_PRIORITY:
        raise CorruptState(f"{where}: priority out of range")
    if born.key is not None and not 0 < len(born.key) <= MAX_KEY_LENGTH:
        raise CorruptState(f"{where}: key length outside 1..{MAX_KEY_LENGTH}")
    if born.max_attempts is not None and not 1 <= born.max_attempts <= MAX_ATTEMPTS:
        raise CorruptState(f"{where}: max_attempts outside 1..{MAX_ATTEMPTS}")


def _validate_status(job: Job, where: str) -> None:
    status = job.status
    if status is JobStatus.CLAIMED and (job.claimed_by is None or job.claimed_at is None):
        raise CorruptState(f"{where}: claimed but has no claimed_by or claimed_at")
    if status is JobStatus.READY and (job.claimed_by is not None or job.claimed_at is not None):
        raise CorruptState(f"{where}: ready but still has claimed_by or claimed_at")
    if status in (JobStatus.COMPLETED, JobStatus.CANCELLED) and job.archive_key is None:
        raise CorruptState(f"{where}: {status.value} but has no archive_key")
    if status in (JobStatus.READY, JobStatus.CLAIMED) and job.archive_key is not None:
        raise CorruptState(f"{where}: archive_key set on a {status.value} job")
    if job.cancel_requested and status is not JobStatus.CLAIMED:
        raise CorruptState(f"{where}: cancel_requested on a job that is not claimed")
