"""This member's record in the bucket, and its view of the others.

:class:`Membership` joins the group (writes its record into a free slot,
:mod:`osqueue_io.group.members`), then every ``poll`` lists the slots, checks each
one's version (a HEAD), reads a record only when its version is new, and renews its
own record every third of its lease: a conditional write on the version it last wrote.
If that write finds another record in its slot (this member was paused past its lease
and another one joined there), it joins again in another slot. On a clean stop it
marks its record ``left``.

Storage failures here are logged and retried at the next poll; they prove nothing
about the others (a record whose version could not be checked is judged by the last
version seen, so a member unreachable for a whole lease counts as gone, which only
makes this member take on more work).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import anyio
import attrs

from osqueue_core import CorruptState, OsqueueError, Owner, decode_header
from osqueue_io.group.layout import MEMBERS_PREFIX, state_key
from osqueue_io.group.members import (
    MAX_MEMBERS,
    MemberRecord,
    Roster,
    decode_member,
    encode_member,
    member_key,
    member_slot,
)
from osqueue_io.storage import (
    AlreadyExists,
    ObjectStore,
    ObjectVersion,
    OutcomeUnknown,
    StorageError,
    WriteConflict,
)

log = logging.getLogger("osqueue.group")

Clock = Callable[[], float]


class Membership:
    """``record`` is this member as it publishes itself; ``poll`` is how often it
    looks at the others; every storage call is bounded by ``storage_timeout``."""

    def __init__(
        self,
        store: ObjectStore,
        record: MemberRecord,
        *,
        poll: float,
        storage_timeout: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.store = store
        self.record = record
        self.poll_interval = poll
        self.storage_timeout = storage_timeout
        self.clock = clock
        self.roster = Roster(record.lease)
        self._version: ObjectVersion | None = None
        self._renewed_at = -math.inf
        #: Renewals written, and slots this member had to join again.
        self.renewals = 0
        self.rejoins = 0

    @property
    def slot(self) -> int | None:
        return self.roster.own

    def standing(self) -> tuple[int, int]:
        """``(live members, this one's rank among them in slot order)``; ``(1, 0)``
        while it has not joined."""
        live = self.roster.live_slots(self.clock())
        own = self.roster.own
        if own is None or own not in live:
            return 1, 0
        return len(live), live.index(own)

    # -- joining and leaving -----------------------------------------------------------

    async def join(self, stopping: Callable[[], bool] = lambda: False) -> bool:
        """Take a free slot (waiting, polling, while every slot holds a live member).
        False if ``stopping()`` became true first."""
        waited = False
        while not stopping():
            await self.poll()
            slot = self.roster.free_slot(self.clock())
            if slot is not None and await self._take(slot):
                log.info("joined the group in member slot %d", slot)
                return True
            if slot is None and not waited:
                waited = True
                log.warning(
                    "all %d member slots hold live members: waiting for one to free up",
                    MAX_MEMBERS,
                )
            await anyio.sleep(self.poll_interval)
        return False

    async def _take(self, slot: int) -> bool:
        """Write our record into ``slot`` over the version we saw there (create-only if
        it was empty): exactly one of several members racing for it gets it."""
        data = encode_member(self.record)
        key = member_key(slot)
        expected = self.roster.version(slot)
        try:
            with anyio.fail_after(self.storage_timeout):
                if isinstance(expected, ObjectVersion):
                    version = await self.store.update(key, data, expected)
                else:
                    version = await self.store.create(key, data)
        except (WriteConflict, AlreadyExists):
            return False  # another member got there first
        except (OutcomeUnknown, TimeoutError):
            found = await self._read_own(slot)
            if found is None:
                return False
            version = found
        except StorageError as error:
            log.warning("could not write member slot %d: %s", slot, error)
            return False
        self._own(slot, version)
        return True

    def _own(self, slot: int, version: ObjectVersion) -> None:
        self.roster.own = slot
        self._version = version
        self._renewed_at = self.clock()
        self.roster.read(slot, version, self.record, self.clock())

    async def _read_own(self, slot: int) -> ObjectVersion | None:
        """The version of ``slot`` if it holds our record (an unknown write landed)."""
        try:
            with anyio.fail_after(self.storage_timeout):
                found = await self.store.read(member_key(slot))
        except (StorageError, TimeoutError):
            return None
        if found is None:
            return None
        try:
            record = decode_member(found.data)
        except CorruptState:
            return None
        return found.version if record.incarnation == self.record.incarnation else None

    async def leave(self) -> None:
        """Mark our record ``left`` (once): the others count us gone at their next poll."""
        slot, expected = self.roster.own, self._version
        if slot is None or expected is None:
            return
        self.record = attrs.evolve(self.record, left=True)
        try:
            with anyio.fail_after(self.storage_timeout):
                await self.store.update(member_key(slot), encode_member(self.record), expected)
        except (StorageError, TimeoutError) as error:
            log.warning("could not mark member slot %d left (%s): it expires instead", slot, error)
        self.roster.own = None

    # -- watching ----------------------------------------------------------------------

    async def run(self, changed: Callable[[], None]) -> None:
        """Poll and renew until cancelled; ``changed()`` after every poll."""
        while True:
            await self.poll()
            if self.clock() - self._renewed_at >= self.record.lease / 3:
                await self.renew()
            changed()
            await anyio.sleep(self.poll_interval)

    async def renew(self) -> None:
        """Write our record again over our last version (our lease goes on)."""
        slot, expected = self.roster.own, self._version
        if slot is None or expected is None:
            return
        try:
            with anyio.fail_after(self.storage_timeout):
                version = await self.store.update(
                    member_key(slot), encode_member(self.record), expected
                )
        except WriteConflict:
            if (found := await self._read_own(slot)) is not None:
                self._own(slot, found)  # our own earlier write, whose answer was lost
                return
            log.warning(
                "member slot %d was taken over (we were silent too long): joining again", slot
            )
            self.rejoins += 1
            self.roster.own = None
            self._version = None
            await self.join()
            return
        except (StorageError, TimeoutError) as error:
            log.warning("could not renew member slot %d: %s (retrying)", slot, error)
            return
        self.renewals += 1
        self._own(slot, version)

    async def poll(self) -> None:
        """Look at every slot once: list them, HEAD each, read those with a new version."""
        try:
            with anyio.fail_after(self.storage_timeout):
                keys = await self.store.list(MEMBERS_PREFIX, limit=MAX_MEMBERS + 16)
        except (StorageError, TimeoutError) as error:
            log.warning("could not list the group's members: %s", error)
            return
        slots = {slot for key in keys if (slot := member_slot(key)) is not None}
        for slot in self.roster.slots():
            if slot not in slots and slot != self.roster.own:
                self.roster.gone(slot)
        async with anyio.create_task_group() as checks:
            for slot in sorted(slots):
                checks.start_soon(self._check, slot)

    async def _check(self, slot: int) -> None:
        key = member_key(slot)
        try:
            with anyio.fail_after(self.storage_timeout):
                version = await self.store.head(key)
                if version is None:
                    if slot != self.roster.own:
                        self.roster.gone(slot)
                    return
                if not self.roster.seen(slot, version, self.clock()):
                    return
                found = await self.store.read(key)
        except (StorageError, TimeoutError):
            return  # proves nothing: judged by what was seen last
        if found is None:
            return
        try:
            record: MemberRecord | None = decode_member(found.data)
        except CorruptState as error:
            log.warning("member slot %d holds no valid record: %s", slot, error)
            record = None
        if record is not None and not record.left and record.group != self.record.group:
            # Never unsafe (each queue is fenced on its own), but the quotas of members
            # with different lists do not add up: the queues may not balance.
            log.warning(
                "member %s (slot %d) runs another list of queues than this member: start "
                "every member of a group with the same --group list",
                record.identity,
                slot,
            )
        self.roster.read(slot, found.version, record, self.clock())


async def queue_owner(store: ObjectStore, queue: str) -> Owner | None:
    """The owner ``queue``'s state names (None: no state, or it could not be read).
    Bound it with a timeout."""
    try:
        found = await store.read(state_key(queue))
    except StorageError:
        return None
    if found is None:
        return None
    try:
        return decode_header(found.data).owner
    except OsqueueError:  # corrupt, or newer: not ours to judge
        return None
