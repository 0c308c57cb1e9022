"""Finding the broker that owns the queue, and following it when it changes.

A remote client can be given one address (as before), several (a broker and its
standbys), or the queue's storage URL (docs/high-availability.md, "Discovery"). When a
call cannot reach the owner (refused, reset, no answer) or is told it reached the wrong
broker (``NotOwner`` from a standby, ``BrokerReplaced``, ``BrokerStopping``), the
:class:`Locator` says where to go next:

1. the owner the error names, if it names one with an address;
2. else the owner recorded in the state object, read from the bucket (its header only
   is decoded; the address a broker publishes is the one clients should use);
3. else the next of the addresses given, in turn.

Which calls are then sent again is :mod:`osqueue_io.connection`'s business (``Retry``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from osqueue_core import (
    BrokerNotRunning,
    BrokerReplaced,
    BrokerStopping,
    InvalidArgument,
    NotOwner,
    OsqueueError,
    decode_header,
)
from osqueue_io.address import split_host_port
from osqueue_io.storage import ObjectStore, StorageError

#: Most addresses a client may be given.
MAX_ADDRESSES = 64


class Retry(enum.Enum):
    """When a call that failed over may be sent again to the next broker."""

    #: Never: the error goes to the caller (a client with one fixed address).
    NEVER = enum.auto()
    #: Only when the broker certainly did not apply it: the connection was refused, a
    #: standby answered ``NotOwner``, or a stopping broker refused it on arrival.
    IF_NOT_APPLIED = enum.auto()
    #: Whenever it failed over: sending it twice does no harm (reads, heartbeats,
    #: keyed pushes, cancels; claims, whose lost grant comes back after its lease).
    ALWAYS = enum.auto()


def fails_over(error: OsqueueError) -> bool:
    """Whether ``error`` means "this broker cannot serve you; the owner may be
    elsewhere": the call may succeed at the next broker."""
    return isinstance(error, BrokerReplaced | BrokerStopping | BrokerNotRunning)


def certainly_not_applied(error: OsqueueError) -> bool:
    """Whether ``error`` proves the broker did not apply the request."""
    if isinstance(error, NotOwner | BrokerStopping):
        return True  # refused on arrival, before anything was applied
    return isinstance(error, BrokerNotRunning) and isinstance(
        error.__cause__, ConnectionRefusedError
    )


def check_addresses(addresses: str | Sequence[str]) -> tuple[str, ...]:
    """``addresses`` as a tuple of ``host:port`` strings: at least one, at most
    :data:`MAX_ADDRESSES`, each well formed."""
    found = (addresses,) if isinstance(addresses, str) else tuple(addresses)
    if not 1 <= len(found) <= MAX_ADDRESSES:
        raise InvalidArgument(f"give between 1 and {MAX_ADDRESSES} broker addresses")
    for address in found:
        parsed = split_host_port(address) if isinstance(address, str) else None
        if parsed is None or not parsed[0]:
            raise InvalidArgument(f"broker address {str(address)[:100]!r} is not host:port")
    return found


class Locator:
    """Where to send calls: ``addresses`` in turn, or the owner ``store``'s state
    object (at ``state_key``) names. ``current`` is where calls go now."""

    def __init__(
        self,
        addresses: Sequence[str],
        store: ObjectStore | None = None,
        state_key: str = "state.json",
    ) -> None:
        self.addresses = tuple(addresses)
        self.store = store
        self.state_key = state_key
        self.current: str | None = self.addresses[0] if self.addresses else None
        #: Times the owner was looked up in the bucket, and moves to another address.
        self.lookups = 0
        self.moves = 0

    @property
    def discovers(self) -> bool:
        """Whether there is anywhere else to go: a bucket, or more than one address."""
        return self.store is not None or len(self.addresses) > 1

    async def locate(self) -> str:
        """The address to call now: the owner the bucket names if none is known yet."""
        if self.current is None:
            found = await self._from_bucket()
            if found is None:
                raise BrokerNotRunning(
                    f"no broker owns the queue in {self._where()} yet (no state object, "
                    "or its owner published no address): start one, or retry"
                )
            self.current = found
        return self.current

    async def move_on(self, failed: str, error: OsqueueError) -> None:
        """A call to ``failed`` ended with ``error``: choose where the next one goes.
        Calls that failed at an address already left behind change nothing."""
        if failed != self.current:
            return
        target: str | None = None
        if isinstance(error, BrokerReplaced) and error.new_address:
            target = error.new_address
        if (target is None or target == failed) and self.store is not None:
            target = await self._from_bucket()
        if (target is None or target == failed) and len(self.addresses) > 1:
            index = self.addresses.index(failed) if failed in self.addresses else -1
            target = self.addresses[(index + 1) % len(self.addresses)]
        if target is not None and target != failed and split_host_port(target) is not None:
            self.current = target
            self.moves += 1

    async def _from_bucket(self) -> str | None:
        if self.store is None:
            return None
        self.lookups += 1
        try:
            found = await self.store.read(self.state_key)
        except StorageError:
            return None  # try again at the next failure
        if found is None:
            return None
        try:
            owner = decode_header(found.data).owner
        except OsqueueError:
            return None  # corrupt or newer: no broker serves it anyway
        return owner.address

    def _where(self) -> str:
        return self.store.url if self.store is not None else ", ".join(self.addresses)
