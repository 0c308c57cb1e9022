"""Who is in a scale-out group, judged the way a standby judges an owner.

Each member keeps a small record in the bucket, in one of :data:`MAX_MEMBERS` slots,
``group/members/<slot:03d>.json``: ``{identity, incarnation, address, lease, left,
group}`` (``group``: a digest of the queue list it runs).
It renews it (a conditional write on its own last version) every third of its lease
and marks it ``left`` when it stops cleanly. Slots are reused, so the records stay
bounded however often members come and go (records are never deleted):
a member joins in the lowest slot that is empty, left, or dead.

:class:`Roster` is the pure part: what a member concludes from the versions it sees,
on **its own monotonic clock** only. A record is live until its version has stayed
the same for a whole lease since this member first saw that version (a wall clock is
never read or compared), or once it says ``left``. ``osqueue_io.group.membership`` does
the reading and writing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import attrs
import orjson

from osqueue_core import MAX_ID_LENGTH, CorruptState, quote
from osqueue_core.limits import MAX_LEASE, MIN_LEASE
from osqueue_io.group.layout import MEMBERS_PREFIX

#: Most members of a group (slots of member records).
MAX_MEMBERS = 64
#: Largest member record read (a record is ~300 bytes).
MAX_RECORD_BYTES = 4096
SCHEMA = 1


def member_key(slot: int) -> str:
    return f"{MEMBERS_PREFIX}{slot:03d}.json"


def member_slot(key: str) -> int | None:
    """The slot a key under the members prefix names (None: not a slot's key)."""
    name = key.removeprefix(MEMBERS_PREFIX)
    number = name.removesuffix(".json")
    if name == key or number == name or len(number) != 3 or not number.isdigit():
        return None
    slot = int(number)
    return slot if slot < MAX_MEMBERS else None


@attrs.frozen
class MemberRecord:
    """One member, as it writes itself into its slot."""

    identity: str
    #: Unique per process: tells a restart (same identity) from the member itself.
    incarnation: str
    #: Where clients reach it (informational: clients route by each queue's owner).
    address: str | None
    #: It renews the record at least this often while alive (seconds).
    lease: float
    #: It stopped cleanly: its slot is free, and it counts as gone at once.
    left: bool = False
    #: Which queues it runs (:func:`group_digest`): members of one group must agree.
    group: str = ""


def group_digest(queues: Sequence[str]) -> str:
    """A short digest of a group's queue list, in the member records, so that a member
    started with another list is noticed (and logged) by the others."""
    return hashlib.blake2b("\n".join(queues).encode(), digest_size=8).hexdigest()


def encode_member(record: MemberRecord) -> bytes:
    return orjson.dumps(
        {
            "schema": SCHEMA,
            "identity": record.identity,
            "incarnation": record.incarnation,
            "address": record.address,
            "lease": record.lease,
            "left": record.left,
            "group": record.group,
        }
    )


def decode_member(data: bytes) -> MemberRecord:
    """A member record; ``CorruptState`` for anything else (never trusted further)."""
    if len(data) > MAX_RECORD_BYTES:
        raise CorruptState(f"a member record of {len(data)} bytes (at most {MAX_RECORD_BYTES})")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise CorruptState(f"a member record is not JSON: {error}") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise CorruptState("a member record without schema 1 (written by another version?)")
    identity, incarnation = raw.get("identity"), raw.get("incarnation")
    address, lease, left = raw.get("address"), raw.get("lease"), raw.get("left")
    group = raw.get("group")
    for name, value in (("identity", identity), ("incarnation", incarnation)):
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
            raise CorruptState(f"a member record's {name} is not a name: {quote(str(value))}")
    if address is not None and (not isinstance(address, str) or len(address) > MAX_ID_LENGTH):
        raise CorruptState(f"a member record's address is not one: {quote(str(address))}")
    if not isinstance(lease, int | float) or isinstance(lease, bool):
        raise CorruptState("a member record's lease is not a number")
    if not (math.isfinite(lease) and MIN_LEASE <= lease <= MAX_LEASE):
        raise CorruptState(f"a member record's lease is not {MIN_LEASE:g}-{MAX_LEASE:g} s")
    if not isinstance(left, bool):
        raise CorruptState("a member record's 'left' is not true or false")
    if not isinstance(group, str) or len(group) > 64:
        raise CorruptState("a member record's group digest is not one")
    return MemberRecord(str(identity), str(incarnation), address, float(lease), left, group)


@attrs.define
class _Seen:
    """A slot as last seen: its version, since when (our clock), and its record as last
    read (None: never read, or unreadable) with the version it was read at."""

    version: object
    since: float
    record: MemberRecord | None = None
    read_version: object = None


class Roster:
    """Member slots as this member saw them; ``own`` is its own slot once it joined
    (always live to itself). ``lease`` judges a record that could not be read."""

    def __init__(self, lease: float) -> None:
        self.lease = lease
        self.own: int | None = None
        self._slots: dict[int, _Seen] = {}

    def seen(self, slot: int, version: object, now: float) -> bool:
        """A HEAD (or listing) showed ``slot`` at ``version``; True if its record must be
        read (a version not read yet)."""
        seen = self._slots.get(slot)
        if seen is None:
            self._slots[slot] = seen = _Seen(version, now)
        elif seen.version != version:
            # Alive. The record it had stands until the new one is read.
            seen.version, seen.since = version, now
        return seen.read_version != version

    def read(self, slot: int, version: object, record: MemberRecord | None, now: float) -> None:
        """``slot``'s record at ``version`` (None: it did not decode)."""
        self.seen(slot, version, now)
        seen = self._slots[slot]
        seen.record, seen.read_version = record, version

    def gone(self, slot: int) -> None:
        """``slot`` has no record (never had one here, or it was deleted by hand)."""
        self._slots.pop(slot, None)

    def slots(self) -> list[int]:
        return sorted(self._slots)

    def record(self, slot: int) -> MemberRecord | None:
        seen = self._slots.get(slot)
        return None if seen is None else seen.record

    def version(self, slot: int) -> object | None:
        seen = self._slots.get(slot)
        return None if seen is None else seen.version

    def live(self, slot: int, now: float) -> bool:
        """Whether ``slot`` holds a live member (the standby rule, on our clock)."""
        if slot == self.own:
            return True
        seen = self._slots.get(slot)
        if seen is None or seen.record is None or seen.record.left:
            return False
        return now - seen.since < seen.record.lease

    def live_slots(self, now: float) -> list[int]:
        """The slots of live members, this one's included once it joined, in order."""
        slots = set(self._slots) if self.own is None else {*self._slots, self.own}
        return [slot for slot in sorted(slots) if self.live(slot, now)]

    def live_members(self, now: float) -> list[MemberRecord]:
        """The live members, by slot."""
        return [record for slot in self.live_slots(now) if (record := self.record(slot))]

    def free_slot(self, now: float) -> int | None:
        """The lowest slot a member may join in: empty, left, or dead (unchanged for a
        lease since we first saw it, unreadable ones by our own lease); None if every
        slot holds a live member (or one not watched for a lease yet)."""
        for slot in range(MAX_MEMBERS):
            seen = self._slots.get(slot)
            if seen is None:
                return slot
            if slot == self.own:
                continue
            record = seen.record
            if record is not None and record.left:
                return slot
            lease = record.lease if record is not None else self.lease
            if now - seen.since >= lease:
                return slot
        return None
