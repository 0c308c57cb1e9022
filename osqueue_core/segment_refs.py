"""The state's references to segments: their fields, keys, digests and JSON.

A **segment** is an immutable, create-only object holding full ``ready`` job records,
sorted by (queue, priority descending, seq), so each queue is one run (*group*) in
claim order (:mod:`osqueue_core.segment_codec` reads and writes the objects). The state
keeps one **reference** per segment: its key, digest, size, groups, and the runs of
positions that have *left* (docs/state-format.md, "Segments")::

    {"key":...,"digest":...,"bytes":...,"jobs":...,"seqs":[a,b],"due":[x,y],"keyed":k,
     "groups":[[queue,count,top_priority,first_seq,since],...],"left":[[start,count],...]}

``due``, ``keyed`` and ``left`` are omitted at their defaults. :func:`decode_refs`
validates a state's list and raises ``CorruptState``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import attrs
import orjson

from osqueue_core.config import MAX_SEGMENT_JOBS
from osqueue_core.errors import CorruptState, InvalidArgument
from osqueue_core.limits import MAX_COUNTER, MAX_PRIORITY, check_queue_name
from osqueue_core.quoting import quote

#: The last part of a segment key: ``<epoch:06d>-<n:010d>.json``.
_KEY_NAME = re.compile(r"(?:.*/)?([0-9]{6,})-([0-9]{10,})\.json")


@attrs.frozen
class SegmentGroup:
    """The positions of one queue in a segment, in claim order."""

    queue: str
    count: int
    top_priority: int
    first_seq: int
    #: The oldest ready-since of its jobs when written (for stats).
    since: float


@attrs.frozen
class SegmentRef:
    """The state's record of one segment. ``left`` holds runs ``(start, count)`` of
    positions that are not untouched any more (inline again, or gone)."""

    key: str
    digest: str
    size: int
    jobs: int
    seqs: tuple[int, int]
    groups: tuple[SegmentGroup, ...]
    due: tuple[float, float] | None = None
    keyed: int = 0
    left: tuple[tuple[int, int], ...] = ()


def segment_key(prefix: str, epoch: int, number: int) -> str:
    """The key of this broker's ``number``-th segment: sorts by epoch, then number."""
    return f"{prefix}{epoch:06d}-{number:010d}.json"


def segment_key_epoch(key: str) -> int | None:
    """The epoch that wrote segment ``key`` (None: not a segment key)."""
    match = _KEY_NAME.fullmatch(key)
    return int(match.group(1)) if match else None


def own_segment_epoch(prefix: str, key: str) -> int | None:
    """The epoch that wrote ``key`` if it is exactly a key :func:`segment_key` makes
    under ``prefix`` (not in a folder below it, no other spelling); None otherwise."""
    match = _KEY_NAME.fullmatch(key)
    if match is None or len(match.group(1)) > 15 or len(match.group(2)) > 20:
        return None  # beyond any reachable epoch or count (and int() of it is bounded)
    epoch, number = int(match.group(1)), int(match.group(2))
    return epoch if segment_key(prefix, epoch, number) == key else None


def digest_of(data: bytes) -> str:
    """BLAKE2b-128 of ``data``, hex: what a reference records and a read checks."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def untouched_positions(ref: SegmentRef) -> list[int]:
    """The positions of ``ref`` not covered by its ``left`` runs: its untouched jobs."""
    positions: list[int] = []
    start = 0
    for left_start, count in (*ref.left, (ref.jobs, 0)):
        positions.extend(range(start, left_start))
        start = left_start + count
    return positions


def group_list(group: SegmentGroup) -> list[Any]:
    """A group as JSON writes it: ``[queue, count, top_priority, first_seq, since]``."""
    return [group.queue, group.count, group.top_priority, group.first_seq, group.since]


def encode_ref(ref: SegmentRef) -> bytes:
    """One reference's JSON in the state's ``segments`` list (canonical)."""
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
    raw["groups"] = [group_list(group) for group in ref.groups]
    if ref.left:
        raw["left"] = [list(run) for run in ref.left]
    return orjson.dumps(raw)


_REF_FIELDS = ("key", "digest", "bytes", "jobs", "seqs", "due", "keyed", "groups", "left")


def decode_refs(raw: Any, next_seq: int) -> list[SegmentRef]:
    """The ``segments`` list of a schema 3 state, validated (``CorruptState``)."""
    if not isinstance(raw, list):
        raise CorruptState("the state object's segments is not a list")
    refs: list[SegmentRef] = []
    keys: set[str] = set()
    for index, item in enumerate(raw):
        where = f"segment reference {index}"
        try:
            ref = _decode_ref(item, next_seq, where)
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise CorruptState(f"{where} does not parse: {exc}") from None
        if ref.key in keys:
            raise CorruptState(f"{where}: key {quote(ref.key)} is referenced twice")
        keys.add(ref.key)
        refs.append(ref)
    return refs


def _int(value: Any, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if type(value) not in (int, float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


def _decode_ref(item: Any, next_seq: int, where: str) -> SegmentRef:
    if not isinstance(item, dict):
        raise ValueError("not an object")
    unknown = set(item) - set(_REF_FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    key, digest = item["key"], item["digest"]
    if not isinstance(key, str) or not _KEY_NAME.fullmatch(key):
        raise ValueError(f"key {quote(key)} is not a segment key")
    if not isinstance(digest, str) or not re.fullmatch("[0-9a-f]{32}", digest):
        raise ValueError("digest is not 32 hex digits")
    size = _int(item["bytes"], 1, MAX_COUNTER, "bytes")
    # Bounded like every segment a broker writes: positions fit the key index's 32 bits,
    # and a bitmap of them is small.
    jobs = _int(item["jobs"], 1, MAX_SEGMENT_JOBS, "jobs")
    low, high = item["seqs"]
    seqs = (_int(low, 0, next_seq - 1, "seqs"), _int(high, low, next_seq - 1, "seqs"))
    due = None
    if "due" in item:
        first, last = (_number(at, "due") for at in item["due"])
        if first > last:
            raise ValueError("due[0] > due[1]")
        due = (first, last)
    keyed = _int(item.get("keyed", 1), 1, jobs, "keyed") if "keyed" in item else 0
    groups: list[SegmentGroup] = []
    for entry in item["groups"]:
        queue, count, top, first_seq, since = entry
        try:
            check_queue_name(queue)
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        if groups and queue <= groups[-1].queue:
            raise ValueError("groups are not sorted by queue, each queue once")
        groups.append(
            SegmentGroup(
                queue,
                _int(count, 1, jobs, "a group's count"),
                _int(top, -MAX_PRIORITY, MAX_PRIORITY, "top_priority"),
                _int(first_seq, low, high, "first_seq"),
                _number(since, "since"),
            )
        )
    if not groups or sum(group.count for group in groups) != jobs:
        raise ValueError("the groups' counts do not add up to jobs")
    left: list[tuple[int, int]] = []
    end = -1
    for run in item.get("left", ()):
        start, count = run
        _int(start, end + 1, jobs - 1, "a left run's start")
        _int(count, 1, jobs - start, "a left run's count")
        left.append((start, count))
        end = start + count
    if "left" in item and not left:
        raise ValueError("left is empty (omit it)")
    return SegmentRef(key, digest, size, jobs, seqs, tuple(groups), due, keyed, tuple(left))
