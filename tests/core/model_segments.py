"""How the model test reads a schema 3 state: inline jobs + the untouched records of every
referenced segment, read from the simulated store (docs/architecture.md, "Segments";
docs/state-format.md, "Segments"). Written from the documented format, not with
``osqueue_core``'s segment code: a broker that encodes a reference or a segment wrongly
must not fool the model by decoding it just as wrongly.

:func:`read_state` gives every existing check of the model the job list it expects
(nothing more, nothing less, born as asked, order, history...), and checks on the way
what the design promises of every state that landed:

* every ref names an object the store holds (or held: the history audit reads the
  bytes a broker created), whose size and BLAKE2b-128 match, whose key, groups, job
  count, seq range, due range and keyed count match the ref, whose seqs (and key index)
  match its records, and whose records are canonical ``ready`` job fragments in claim
  order (queue, priority descending, seq): the object re-encodes to its own bytes;
* the refs themselves are canonical (field order, defaults omitted, ``left`` sorted,
  merged and in range) and no key is referenced twice;
* **one place**: no id or seq twice over inline and untouched jobs.

:func:`audit_segments` checks what needs two versions or the store's record: a ref is
attached only once its segment was known durable (before the state's bytes were first
handed to storage); a job that only moved (inline → segment, segment → segment) has the
same record; a ref all of whose positions have left is gone by the next version.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import orjson

from osqueue_core import (
    SCHEMA_VERSION,
    Job,
    JobStatus,
    decode_state,
    encode_job,
    encode_state,
    segment_job,
)
from osqueue_core import (
    decode_segment as core_decode_segment,
)
from osqueue_core import (
    encode_ref as core_encode_ref,
)
from osqueue_core.segment_codec import encode_segment as core_encode_segment

from .model_basics import EPSILON, ready_at, seq_of

#: The schema of a segment object, and of a state that references segments.
SEGMENT_SCHEMA = 3
#: Stage 1 (docs/architecture.md, "Stages"): only due, unkeyed jobs are spilled.
STAGE = 1

_JOBS_MARKER = b',"jobs":['
_SEGMENTS_MARKER = b',"segments":['
#: Fields of a job record that a segment never holds (its jobs are ready, unfinished).
_NEVER_IN_SEGMENT = (
    "status",
    "claimed_by",
    "claimed_at",
    "finished_at",
    "archive_key",
    "cancel_requested",
    "result",
)

Group = tuple[str, int, int, int, float]


@attrs.frozen
class Ref:
    """A reference as the model reads it from the state's ``segments`` list."""

    key: str
    digest: str
    size: int
    jobs: int
    seqs: tuple[int, int]
    groups: tuple[Group, ...]
    due: tuple[float, float] | None = None
    keyed: int = 0
    left: tuple[tuple[int, int], ...] = ()

    def untouched(self) -> list[int]:
        """Positions not covered by ``left``: their job is exactly the record."""
        gone = {start + i for start, count in self.left for i in range(count)}
        return [p for p in range(self.jobs) if p not in gone]


@attrs.frozen
class Segment:
    """A segment object, decoded and checked on its own (not yet against a ref)."""

    key: str
    groups: tuple[Group, ...]
    records: tuple[Job, ...]


@attrs.frozen
class Stored:
    """A stored state as the model reads it."""

    inline: list[Job]
    refs: list[Ref]
    #: Untouched job id -> (segment key, position).
    places: dict[str, tuple[str, int]]
    #: Inline jobs, then every untouched job: what the model's checks look at.
    jobs: list[Job]
    #: The jobs of each referenced segment (untouched or not), by key.
    segments: dict[str, Segment]


def digest_of(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# -- references ----------------------------------------------------------------------


def parse_ref(item: Any) -> Ref:
    assert isinstance(item, dict), f"a ref is not an object: {item!r}"
    fields = ("key", "digest", "bytes", "jobs", "seqs", "due", "keyed", "groups", "left")
    assert set(item) <= set(fields), f"a ref with unknown fields: {sorted(item)}"
    groups = _parse_groups(item["groups"])
    low, high = item["seqs"]
    due = item.get("due")
    return Ref(
        key=item["key"],
        digest=item["digest"],
        size=item["bytes"],
        jobs=item["jobs"],
        seqs=(low, high),
        groups=groups,
        due=None if due is None else (float(due[0]), float(due[1])),
        keyed=item.get("keyed", 0),
        left=tuple((start, count) for start, count in item.get("left", ())),
    )


def _parse_groups(raw: Any) -> tuple[Group, ...]:
    return tuple((name, count, top, first, float(since)) for name, count, top, first, since in raw)


def encode_ref(ref: Ref) -> bytes:
    """A ref as docs/state-format.md writes it: this field order, defaults omitted."""
    raw: dict[str, Any] = {
        "key": ref.key,
        "digest": ref.digest,
        "bytes": ref.size,
        "jobs": ref.jobs,
        "seqs": list(ref.seqs),
    }
    if ref.due is not None:
        raw["due"] = list(ref.due)
    if ref.keyed:
        raw["keyed"] = ref.keyed
    raw["groups"] = [list(group) for group in ref.groups]
    if ref.left:
        raw["left"] = [list(run) for run in ref.left]
    return orjson.dumps(raw)


def check_ref_alone(ref: Ref, prefix: str, next_seq: int) -> None:
    where = f"ref {ref.key}"
    name = ref.key.removeprefix(prefix)
    epoch, _, number = name.removesuffix(".json").partition("-")
    assert ref.key.startswith(prefix), f"{where}: not under {prefix}"
    assert name.endswith(".json"), f"{where}: not a segment key"
    assert len(epoch) >= 6, f"{where}: not a segment key"
    assert len(number) >= 10, f"{where}: not a segment key"
    assert (epoch + number).isdigit(), f"{where}: not a segment key"
    assert sum(g[1] for g in ref.groups) == ref.jobs, f"{where}: counts"
    assert [g[0] for g in ref.groups] == sorted({g[0] for g in ref.groups}), f"{where}: groups"
    assert all(g[1] >= 1 for g in ref.groups), f"{where}: an empty group"
    assert 0 <= ref.seqs[0] <= ref.seqs[1] < next_seq, f"{where}: seqs outside [0, next_seq)"
    assert ref.due is None or ref.due[0] <= ref.due[1], f"{where}: due"
    assert 0 <= ref.keyed <= ref.jobs, f"{where}: keyed"
    end = -1
    for start, count in ref.left:
        # Sorted, not overlapping, not adjacent (merged), within range.
        assert start > end, f"{where}: left {ref.left} not sorted and merged"
        assert count >= 1, f"{where}: left {ref.left} has an empty run"
        assert start + count <= ref.jobs, f"{where}: left {ref.left} out of range"
        end = start + count


# -- segment objects -------------------------------------------------------------------


def encode_segment(key: str, groups: Iterable[Group], records: Iterable[Job]) -> bytes:
    """A segment object as docs/state-format.md writes it (compact, this field order)."""
    jobs = list(records)
    head: dict[str, Any] = {
        "schema_version": SEGMENT_SCHEMA,
        "key": key,
        "groups": [list(group) for group in groups],
        "seqs": base64.b64encode(struct.pack(f"<{len(jobs)}q", *(j.seq for j in jobs))).decode(),
    }
    index = key_index(jobs)
    if index:
        head["key_index"] = base64.b64encode(index).decode()
    return b"".join(
        (orjson.dumps(head)[:-1], _JOBS_MARKER, b",".join(encode_job(j) for j in jobs), b"]}")
    )


def key_index(jobs: list[Job]) -> bytes:
    """Sorted (BLAKE2b-64 of queue NUL key, position) pairs of the keyed jobs."""
    pairs = sorted(
        (
            int.from_bytes(
                hashlib.blake2b(f"{job.queue}\0{job.born.key}".encode(), digest_size=8).digest(),
                "little",
            ),
            position,
        )
        for position, job in enumerate(jobs)
        if job.born.key is not None
    )
    return b"".join(struct.pack("<QI", h, p) for h, p in pairs)


def decode_segment(data: bytes) -> Segment:
    """A segment object, checked on its own: canonical ready records in claim order,
    groups and seqs matching them; it re-encodes to ``data``."""
    raw = orjson.loads(data)
    assert isinstance(raw, dict), "a segment that is not a JSON object"
    assert raw.get("schema_version") == SEGMENT_SCHEMA, "not a schema 3 segment"
    key = raw["key"]
    records_raw = raw["jobs"]
    for position, record in enumerate(records_raw):
        present = [name for name in _NEVER_IN_SEGMENT if name in record]
        assert not present, f"segment {key} position {position} carries {present}"
    records = tuple(_decode_records(records_raw))
    assert all(job.status is JobStatus.READY for job in records), f"segment {key}: not ready"
    for job in records:
        assert seq_of(job.id) == job.seq, f"segment {key}: {job.id} has seq {job.seq}"
    order = [(job.queue, -job.priority, job.seq) for job in records]
    assert order == sorted(set(order)), f"segment {key}: records out of claim order"
    groups = _parse_groups(raw["groups"])
    assert groups == _groups_of(records), f"segment {key}: groups {groups} != its records'"
    segment = Segment(key, groups, records)
    assert encode_segment(key, groups, records) == data, f"segment {key} is not canonical"
    return segment


def _decode_records(records: list[Any]) -> list[Job]:
    """Job records, parsed and validated as a state's (the archive's trick)."""
    wrapped = {
        "schema_version": min(SCHEMA_VERSION, 2),
        "revision": 1,
        "owner": {"identity": "segment", "incarnation": "segment", "epoch": 1},
        "next_seq": max((record["seq"] for record in records), default=0) + 1,
        "jobs": records,
    }
    return decode_state(orjson.dumps(wrapped)).jobs


def _ready_since(job: Job) -> float:
    at = ready_at(job)
    return job.born.created_at if at is None else max(job.born.created_at, at)


def _groups_of(records: tuple[Job, ...]) -> tuple[Group, ...]:
    groups: list[Group] = []
    by_queue: dict[str, list[Job]] = {}
    for job in records:
        by_queue.setdefault(job.queue, []).append(job)
    for queue, jobs in by_queue.items():
        since = min(_ready_since(job) for job in jobs)
        groups.append((queue, len(jobs), jobs[0].priority, jobs[0].seq, since))
    return tuple(groups)


def check_against_ref(segment: Segment, data: bytes, ref: Ref) -> None:
    where = f"segment {ref.key}"
    assert len(data) == ref.size, f"{where}: {len(data)} bytes, its ref says {ref.size}"
    assert digest_of(data) == ref.digest, f"{where}: its digest differs from its ref's"
    assert segment.key == ref.key, f"{where} names another key: {segment.key}"
    assert segment.groups == ref.groups, f"{where}: groups differ from its ref's"
    records = segment.records
    assert len(records) == ref.jobs, f"{where}: {len(records)} records, its ref says {ref.jobs}"
    seqs = [job.seq for job in records]
    assert (min(seqs), max(seqs)) == ref.seqs, f"{where}: seq range differs from its ref's"
    dues = [at for job in records if (at := ready_at(job)) is not None]
    due = (min(dues), max(dues)) if dues else None
    assert due == ref.due, f"{where}: due range {due}, its ref says {ref.due}"
    keyed = sum(job.born.key is not None for job in records)
    assert keyed == ref.keyed, f"{where}: {keyed} keyed jobs, its ref says {ref.keyed}"


# -- reading a state -------------------------------------------------------------------


@attrs.define
class SegmentReader:
    """Reads stored states with their segments; decodes each segment object once."""

    prefix: str = "segments/"
    _decoded: dict[bytes, Segment] = attrs.Factory(dict)

    def segment(self, data: bytes) -> Segment:
        digest = hashlib.blake2b(data, digest_size=16).digest()
        found = self._decoded.get(digest)
        if found is None:
            found = self._decoded[digest] = decode_segment(data)
        return found

    def read_state(self, data: bytes, fetch: Callable[[str], bytes | None]) -> Stored:
        """``data``'s jobs: inline ones, and the untouched ones of every ref, whose
        segment bytes ``fetch`` gives (None: the object does not exist)."""
        decoded = decode_state(data)
        inline = decoded.jobs
        raw = orjson.loads(data)
        refs = [parse_ref(item) for item in raw.get("segments", ())]
        if "segments" in raw:
            assert refs, "an empty segments list (it must be omitted)"
            assert raw["schema_version"] >= SEGMENT_SCHEMA, "refs in a state below schema 3"
            start = data.index(_SEGMENTS_MARKER) + len(_SEGMENTS_MARKER)
            end = data.index(_JOBS_MARKER)
            assert data[start:end] == b",".join(encode_ref(r) for r in refs) + b"]", (
                "the state's refs are not canonical"
            )
        keys = [ref.key for ref in refs]
        assert len(set(keys)) == len(keys), f"a segment referenced twice: {keys}"
        next_seq = decoded.header.next_seq
        places: dict[str, tuple[str, int]] = {}
        untouched: list[Job] = []
        segments: dict[str, Segment] = {}
        for ref in refs:
            check_ref_alone(ref, self.prefix, next_seq)
            body = fetch(ref.key)
            assert body is not None, f"the state references {ref.key}, which does not exist"
            segment = self.segment(body)
            check_against_ref(segment, body, ref)
            segments[ref.key] = segment
            for position in ref.untouched():
                job = segment.records[position]
                assert job.id not in places, (
                    f"{job.id} untouched in {places[job.id][0]} and {ref.key}: two places"
                )
                places[job.id] = (ref.key, position)
                untouched.append(job)
        ids = [job.id for job in inline] + [job.id for job in untouched]
        seqs = [job.seq for job in inline] + [job.seq for job in untouched]
        doubled = sorted({i for i in ids if ids.count(i) > 1})
        assert not doubled, f"{doubled}: inline and untouched in a segment (one place)"
        assert len(set(seqs)) == len(seqs), "one seq twice over inline and untouched jobs"
        return Stored(inline, refs, places, [*inline, *untouched], segments)


# -- what needs the history ------------------------------------------------------------


def audit_segments(
    versions: list[tuple[int, Stored, int]],
    known: dict[str, int],
) -> None:
    """Check every stored version against the one before: ``versions`` holds (the step
    its bytes were first handed to storage, what it holds, the step it landed).
    ``known``: the step at which each segment was first known durable to its writer."""
    before: Stored | None = None
    for emitted, stored, _ in versions:
        for ref in stored.refs:
            learnt = known.get(ref.key)
            assert learnt is not None, f"{ref.key} referenced, never known durable"
            assert learnt < emitted, (
                f"{ref.key} referenced by a state written (step {emitted}) before the "
                f"segment was known durable (step {learnt})"
            )
        if before is not None:
            audit_moves(before, stored)
        before = stored


def audit_moves(before: Stored, after: Stored) -> None:
    """A job that only moved keeps its record; a position that left never comes back;
    a ref all of whose positions had left is gone from the next version."""
    old_inline = {job.id: job for job in before.inline}
    for job_id, (key, position) in after.places.items():
        now = after.segments[key].records[position]
        old_place = before.places.get(job_id)
        if old_place is not None:
            was = before.segments[old_place[0]].records[old_place[1]]
        elif job_id in old_inline:
            was = old_inline[job_id]
            if was.status is not JobStatus.READY or was.attempts != now.attempts:
                # Changed and spilled between two versions (a redrive, a claim handed
                # back, a retry): the history audit checks the change.
                continue
        else:
            continue  # pushed and spilled between two versions: never inline in storage
        assert encode_job(was) == encode_job(now), (
            f"{job_id} moved into {key} and its record changed"
        )
    for ref in before.refs:
        stay = next((r for r in after.refs if r.key == ref.key), None)
        if stay is None:
            continue
        assert ref.untouched(), f"{ref.key}: every position had left, and it was not dropped"
        came_back = set(stay.untouched()) - set(ref.untouched())
        assert not came_back, f"{ref.key}: positions {sorted(came_back)} untouched again"


def spilled_only_due_unkeyed(segment: Segment, highest_wall: float) -> None:
    """A spill writes only jobs due when it picked them; stage 1 none with a key, and
    none that ever waited for a time (docs/architecture.md, "Stage 1 as built")."""
    for job in segment.records:
        if STAGE == 1:
            assert job.born.key is None, f"{segment.key}: keyed {job.id} spilled (stage 1)"
            assert ready_at(job) is None, f"{segment.key}: {job.id} has a due time (stage 1)"
        at = ready_at(job)
        assert at is None or at <= highest_wall + EPSILON, (
            f"{segment.key}: {job.id} spilled before it was due ({at} > {highest_wall})"
        )


def core_round_trip(data: bytes, fetch: Callable[[str], bytes | None]) -> None:
    """The core's own codec reads the stored state and every segment it references
    (checked against its ref), and re-encodes each to the same bytes."""
    decoded = decode_state(data)
    refs = b",".join(core_encode_ref(ref) for ref in decoded.segments)
    fragments = [encode_job(job) for job in decoded.jobs]
    again = encode_state(decoded.header, fragments, encoded_refs=refs)
    assert again == data, "the stored state does not re-encode to its bytes"
    for ref in decoded.segments:
        body = fetch(ref.key)
        assert body is not None, f"{ref.key} is referenced and missing"
        contents = core_decode_segment(body, ref)
        records = [encode_job(segment_job(record, ref.key)) for record in contents.records]
        again = core_encode_segment(ref.key, ref.groups, contents.seqs, records)
        assert again == body, f"{ref.key} does not re-encode to its bytes"
