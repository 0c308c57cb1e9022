"""Member records and the roster: liveness judged on this member's own clock."""

from __future__ import annotations

import orjson
import pytest

from osqueue_core import CorruptState
from osqueue_io.group.members import (
    MAX_MEMBERS,
    MemberRecord,
    Roster,
    decode_member,
    encode_member,
    group_digest,
    member_key,
    member_slot,
)

A = MemberRecord("a", "inc-a", "127.0.0.1:1", 2.0)
B = MemberRecord("b", "inc-b", None, 6.0)


def test_records_round_trip_and_anything_else_is_corrupt() -> None:
    assert group_digest(["a", "b"]) != group_digest(["b", "a"]) != group_digest(["ab"])
    for record in (A, B, MemberRecord("c", "i", "h:1", 1.0, left=True, group="12ab")):
        assert decode_member(encode_member(record)) == record
    good = {"schema": 1, "identity": "a", "incarnation": "i", "address": None, "lease": 2}
    good |= {"left": False, "group": ""}
    assert decode_member(orjson.dumps(good)).lease == 2.0
    for data in [
        b"not json",
        b"[]",
        b'{"schema": 2}',
        b"x" * 5000,
        *(
            orjson.dumps({**good, **change})
            for change in [
                {"identity": ""},
                {"identity": "x" * 300},
                {"incarnation": 7},
                {"address": 5},
                {"lease": 0.5},
                {"lease": True},
                {"lease": "2"},
                {"lease": float("inf")},
                {"left": "no"},
                {"group": 7},
                {"group": "x" * 65},
            ]
        ),
    ]:
        with pytest.raises(CorruptState):
            decode_member(data)


def test_slot_keys() -> None:
    assert member_key(7) == "group/members/007.json"
    assert member_slot(member_key(7)) == 7
    for key in (
        "group/members/7.json",
        "group/members/abc.json",
        "group/members/007.txt",
        f"group/members/{MAX_MEMBERS:03d}.json",
        "other/007.json",
    ):
        assert member_slot(key) is None, key


def test_a_member_is_live_until_its_version_stays_the_same_for_its_lease() -> None:
    roster = Roster(lease=5.0)
    roster.read(0, "v1", A, now=100.0)
    assert roster.live(0, 101.9)
    assert not roster.live(0, 102.0), "A's own lease (2 s) decides"
    assert roster.seen(0, "v2", now=102.5), "a new version must be read"
    assert roster.live(0, 104.4), "alive: it wrote, and its last record stands"
    roster.read(0, "v2", A, now=102.6)
    assert not roster.seen(0, "v2", now=103.0), "read already"
    roster.read(1, "w1", MemberRecord("b", "i", None, 2.0, left=True), now=100.0)
    assert not roster.live(1, 100.0), "left: gone at once"
    roster.read(2, "x1", None, now=100.0)
    assert not roster.live(2, 100.0), "unreadable: never trusted"
    roster.own = 3
    assert roster.live(3, 1e9), "this member is live to itself"
    assert roster.live_slots(103.0) == [0, 3]


def test_a_joining_member_takes_the_lowest_empty_left_or_dead_slot() -> None:
    roster = Roster(lease=5.0)
    assert roster.free_slot(0.0) == 0
    roster.read(0, "v", A, now=0.0)
    roster.read(1, "v", MemberRecord("b", "i", None, 2.0, left=True), now=0.0)
    assert roster.free_slot(1.0) == 1, "left"
    roster.read(1, "v", B, now=0.0)
    assert roster.free_slot(1.0) == 2, "empty"
    assert roster.free_slot(2.0) == 0, "A silent for its lease: dead"
    for slot in range(2, MAX_MEMBERS):
        roster.read(slot, "v", B, now=0.0)
    roster.own = 0
    assert roster.free_slot(1.0) is None, "every slot live (ours is not free)"
    roster.read(5, "v", None, now=0.0)
    assert roster.free_slot(4.9) is None
    assert roster.free_slot(5.0) == 5, "unreadable: judged by our own lease"
    roster.gone(1)
    assert roster.free_slot(1.0) == 1
