"""Idempotency keys of untouched jobs: what a keyed push checks besides the inline jobs.

A keyed job spilled into a segment has no ``Job`` in memory, so the inline key index
(:class:`~osqueue_core.table.JobTable`) no longer knows its key. Each segment carries a
**key index** in its header: one (hash, position) pair per keyed job, the hash being
BLAKE2b-64 of ``queue + "\\0" + key`` (queue names hold no NUL, so the pair is
unambiguous), sorted by hash, then position (docs/state-format.md, "A segment object").

The broker keeps one :class:`KeyIndex` over every reference's untouched keyed jobs:
4,096 buckets by the hash's top 12 bits, each a sorted ``array('Q')`` of hashes with a
parallel ``array('Q')`` of locations (segment slot and position in one word). That is 16
bytes a key plus the arrays' slack, and no Python object per key; an insert or removal
moves a few hundred words of one bucket. A hash that is absent means no untouched job
has the key; one that is present names the positions whose real key must be compared
once their segment is loaded, so a collision never merges two keys.

Every hash is computed by :func:`key_hash`, here and only here: tests force collisions
by replacing it.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from array import array
from collections.abc import Iterable

#: Buckets by the top bits of the hash.
_BUCKET_BITS = 12
_BUCKET_SHIFT = 64 - _BUCKET_BITS
#: A location packs a segment's slot above its position (positions fit in 32 bits).
_POSITION_BITS = 32
_POSITION_MASK = (1 << _POSITION_BITS) - 1
#: One pair of a segment's key index: the hash (uint64) and the position (uint32),
#: little-endian.
PAIR = struct.Struct("<QI")

#: (hash, position): one keyed job of a segment.
KeyPair = tuple[int, int]


def key_hash(queue: str, key: str) -> int:
    """BLAKE2b-64 of ``queue`` NUL ``key``, as an unsigned 64-bit integer (the bytes
    read little-endian)."""
    digest = hashlib.blake2b(f"{queue}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def key_pairs(keyed: Iterable[tuple[int, str, str]]) -> list[KeyPair]:
    """A segment's key index from its keyed jobs' (position, queue, key), sorted as
    stored: by hash, then position."""
    return sorted((key_hash(queue, key), position) for position, queue, key in keyed)


def encode_pairs(pairs: Iterable[KeyPair]) -> bytes:
    """The packed key index (before base64)."""
    return b"".join(PAIR.pack(hashed, position) for hashed, position in pairs)


def decode_pairs(packed: bytes, keyed: int, jobs: int) -> list[KeyPair]:
    """A packed key index that must hold ``keyed`` pairs of distinct positions below
    ``jobs``, sorted: its pairs. Raises ``ValueError`` saying what is wrong."""
    if len(packed) != PAIR.size * keyed:
        raise ValueError(f"key_index holds {len(packed) / PAIR.size:g} pairs, expected {keyed}")
    pairs = list(PAIR.iter_unpack(packed))
    positions = [position for _, position in pairs]
    if positions and max(positions) >= jobs:
        raise ValueError("key_index names a position outside the segment")
    if len(set(positions)) != keyed:
        raise ValueError("key_index names a position twice")
    # (No two pairs are equal now: sorted means strictly increasing.)
    if pairs != sorted(pairs):
        raise ValueError("key_index is not sorted by hash, then position")
    return pairs


def location(slot: int, position: int) -> int:
    """Segment ``slot``'s ``position`` as one word."""
    return slot << _POSITION_BITS | position


def split_location(where: int) -> tuple[int, int]:
    """(slot, position) of a location."""
    return where >> _POSITION_BITS, where & _POSITION_MASK


class KeyIndex:
    """Hashes of untouched jobs' keys -> their locations (see the module docstring)."""

    def __init__(self) -> None:
        # Made on the first key: a broker without keyed segments pays nothing.
        self._hashes: list[array[int]] = []
        self._places: list[array[int]] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, entries: Iterable[tuple[int, int]]) -> None:
        """More untouched keyed jobs: (their key's hash, their location) each (a
        segment's, at once: this loop is what a takeover's key index costs per key)."""
        if not self._hashes:
            self._hashes = [array("Q") for _ in range(1 << _BUCKET_BITS)]
            self._places = [array("Q") for _ in range(1 << _BUCKET_BITS)]
        all_hashes, all_places, right = self._hashes, self._places, bisect.bisect_right
        added = 0
        for hashed, where in entries:
            bucket = hashed >> _BUCKET_SHIFT
            hashes = all_hashes[bucket]
            at = right(hashes, hashed)
            hashes.insert(at, hashed)
            all_places[bucket].insert(at, where)
            added += 1
        self._size += added

    def remove_key(self, queue: str, key: str, where: int) -> None:
        """The job at ``where`` (pushed to ``queue`` with ``key``) is not untouched any
        more."""
        hashed = key_hash(queue, key)
        bucket = hashed >> _BUCKET_SHIFT
        hashes, places = self._hashes[bucket], self._places[bucket]
        start = bisect.bisect_left(hashes, hashed)
        at = places.index(where, start, bisect.bisect_right(hashes, hashed, start))
        del hashes[at], places[at]
        self._size -= 1

    def find_key(self, queue: str, key: str) -> list[int]:
        """The locations whose key may be ``key`` in ``queue``: those with its hash
        (usually none, rarely more than one)."""
        if not self._hashes:
            return []
        hashed = key_hash(queue, key)
        bucket = hashed >> _BUCKET_SHIFT
        hashes = self._hashes[bucket]
        end = start = bisect.bisect_left(hashes, hashed)
        while end < len(hashes) and hashes[end] == hashed:
            end += 1
        return self._places[bucket][start:end].tolist()
