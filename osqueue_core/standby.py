"""A standby's watch on the owner: when has its lease lapsed?

An owner with a lease (``BrokerConfig.owner_lease``, published in its owner record)
promises to change the state object at least that often while it lives. A standby
checks the object's version every ``standby_poll`` seconds (a HEAD, cheap) and decides
on **its own clock** only: the owner's lease has lapsed once the standby has seen the
same version for the lease period, measured from when it first saw that version. Wall
clocks of different machines are never compared, and a failed check proves nothing (no
storage, no takeover: the verdict needs a successful check that shows the old version).

It reads the object itself only to learn who owns it (for ``NotOwner`` answers and the
lease period) and whether that owner released it: once at the start and once per
version that has stayed the same for one poll, so a busy owner, whose version changes
between polls, costs HEADs only. A released state, or none at all, is taken over at
once.

A standby can be **held** (:meth:`Watch.hold`): a scale-out group member that owns its
share of the queues keeps its other standbys from taking over, so that a member below
its share does. A held watch keeps watching, and a lapse it finds waits; but a hold
delays a takeover by one more lease at most (counted from when the held watch first
found the lapse), so a queue is never left without an owner because every member
believed it had enough.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from osqueue_core.clock import Clock
from osqueue_core.codec import decode_header
from osqueue_core.config import BrokerConfig
from osqueue_core.effects import ReadObject, ReadVersion
from osqueue_core.events import ObjectRead, StorageResult, VersionRead
from osqueue_core.outbox import Outbox
from osqueue_core.owner import Owner

#: ``on_lapsed(version)``: take the state over, expecting it still at ``version``
#: (None: expecting it absent).
Lapsed = Callable[[object | None], None]


class Watch:
    """The standby side of owner liveness. The broker calls :meth:`pump` after every
    input while STANDBY; ``on_lapsed`` is called once, when it should take over."""

    def __init__(self, config: BrokerConfig, clock: Clock, outbox: Outbox, on_lapsed: Lapsed):
        assert config.owner_lease is not None
        self._own_lease = config.owner_lease
        self._config = config
        self._clock = clock
        self._out = outbox
        self._on_lapsed = on_lapsed
        #: The owner as last read (None before the first read).
        self.owner: Owner | None = None
        #: The version last seen, since when (our clock), and whose owner was read.
        self._version: object | None = None
        self._since = math.inf
        self._read_for: object | None = None
        self._lease = self._own_lease
        self._next_poll = math.inf
        self._in_flight = False
        self._watching = False
        #: Held (see the module docstring), and since when a lapse has been held back.
        self.held = False
        self._held_lapse_since: float | None = None
        #: The version read with ``owner.released`` set (a lapse at the next check).
        self._released: object | None = None
        #: Version checks and reads made, and checks that failed.
        self.checks = 0
        self.reads = 0
        self.failures = 0

    def begin(self) -> None:
        """Start watching: read the state first (who owns it, released or absent)."""
        self._watching = True
        self._read()

    def resume(self, version: object | None, owner: Owner | None) -> None:
        """Watch again after a takeover lost to a live owner, whose state was just read
        at ``version``."""
        self._watching = True
        self._seen(version)
        self._read_for = version
        if owner is not None:
            self._know(owner)
        self._next_poll = self._clock.now + self._config.standby_poll

    def hold(self, held: bool) -> None:
        """Hold back (or let go) a takeover this watch finds due; letting go checks at
        once, so a lapse already seen is taken over without waiting for a poll."""
        if held == self.held:
            return
        self.held = held
        self._held_lapse_since = None
        if not held and self._watching:
            self._next_poll = min(self._next_poll, self._clock.now)

    def pump(self) -> None:
        if self._watching and not self._in_flight and self._clock.now >= self._next_poll:
            self._check()

    def next_deadline(self) -> float | None:
        if not self._watching or self._in_flight or self._next_poll == math.inf:
            return None
        return self._next_poll

    # -- checks ------------------------------------------------------------------------

    def _check(self) -> None:
        self._in_flight = True
        self.checks += 1
        key = self._config.state_key
        self._out.issue(lambda op_id: ReadVersion(op_id, key), self._on_version)

    def _on_version(self, result: StorageResult) -> None:
        self._in_flight = False
        self._next_poll = self._clock.now + self._config.standby_poll
        if not isinstance(result, VersionRead):
            self.failures += 1  # proves nothing either way: check again later
            return
        if result.version is None:
            self._lapse(None)  # no state (deleted, or never made): the takeover decides
        elif result.version != self._version:
            self._seen(result.version)  # the owner wrote: alive
        elif result.version == self._released:
            self._lapse(result.version)  # released, and a hold kept us from taking it
        elif self._read_for != result.version:
            self._read()  # quiet for a poll: did it release? who is it now?
        elif self._clock.now - self._since >= self._lease:
            self._lapse(result.version)

    def _read(self) -> None:
        self._in_flight = True
        self.reads += 1
        key = self._config.state_key
        self._out.issue(lambda op_id: ReadObject(op_id, key), self._on_read)

    def _on_read(self, result: StorageResult) -> None:
        self._in_flight = False
        self._next_poll = self._clock.now + self._config.standby_poll
        if not isinstance(result, ObjectRead):
            self.failures += 1
            return
        if result.data is None:
            self._lapse(None)
            return
        # A corrupt or newer state fails the standby here, as it would fail a takeover.
        owner = decode_header(result.data).owner
        if result.version != self._version:
            self._seen(result.version)
        self._read_for = result.version
        self._know(owner)
        if owner.released:
            self._released = result.version
            self._lapse(result.version)

    # -- verdicts ----------------------------------------------------------------------

    def _seen(self, version: object | None) -> None:
        self._version = version
        self._since = self._clock.now
        self._held_lapse_since = None  # the owner lives: a later lapse starts afresh

    def _know(self, owner: Owner) -> None:
        self.owner = owner
        # The owner's own promise decides; ours covers an owner that published none.
        self._lease = owner.lease if owner.lease is not None else self._own_lease

    def _lapse(self, version: object | None) -> None:
        if self.held:
            now = self._clock.now
            if self._held_lapse_since is None:
                self._held_lapse_since = now
            if now - self._held_lapse_since < self._lease:
                return  # keep watching: checked again at the next poll
        self._watching = False
        self._next_poll = math.inf
        self._on_lapsed(version)
