"""A scale-out group member as the HTTP layer sees it: a broker per queue, and the group.

A member (:class:`~osqueue_io.group.server.GroupServer`) runs a runtime for every queue
of its group, one life after another (:class:`~osqueue_io.group.queue_slot.QueueSlot`),
most of them standbys. :class:`GroupMonitor` holds one
:class:`~osqueue_io.http.monitor.BrokerMonitor` per queue (each slot attaches its
runtimes to its queue's, so counters are carried across lives exactly as on a single
broker) and answers the :class:`~osqueue_io.http.monitor.Monitor` questions over all of
them: the pages show the queues this member serves, the metrics sum the counters of
every runtime and label each served queue's gauges with its name.

:meth:`GroupMonitor.group` is what the group page shows: the members as this member's
roster judges them (its membership polls keep it fresh: no extra reads), and every
queue's owner as its state header in the bucket says (one read per queue: at most
``MAX_GROUP_QUEUES``, a bounded number at once, under a timeout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio
import attrs

from osqueue_core import (
    BrokerConfig,
    BrokerStats,
    OsqueueError,
    Owner,
    Phase,
    decode_header,
    quote,
)
from osqueue_io.group.layout import queue_config, state_key
from osqueue_io.group.members import Roster
from osqueue_io.group.membership import Membership, queue_owner
from osqueue_io.http.monitor import NO_COUNTS, BrokerMonitor, Counters
from osqueue_io.http.params import BadRequest
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.storage import ObjectStore, StoredObject

#: The longest the group page waits for the queues' state headers.
READ_TIMEOUT = 10.0


@attrs.frozen
class MemberRow:
    """One member slot as this member judges it: ``status`` is ``live``, ``left``
    (stopped cleanly), ``expired`` (its record unchanged for a whole lease) or
    ``unreadable``."""

    slot: int
    identity: str
    address: str | None
    status: str
    this: bool


@attrs.frozen
class QueueRow:
    """One queue of the group: the owner its state names (None: no state yet, or one
    that could not be decoded: ``note`` says which), and whether this member serves it."""

    queue: str
    owner: Owner | None
    served_here: bool
    note: str = ""


@attrs.frozen
class GroupView:
    """What the group page shows (``joined``: this member holds a slot)."""

    members: tuple[MemberRow, ...]
    queues: tuple[QueueRow, ...]
    joined: bool


def member_rows(roster: Roster, now: float) -> tuple[MemberRow, ...]:
    """Every slot ``roster`` has seen, judged at ``now`` (the roster's clock)."""
    rows = []
    for slot in roster.slots():
        record = roster.record(slot)
        if record is None:
            rows.append(MemberRow(slot, "", None, "unreadable", slot == roster.own))
            continue
        status = "live" if roster.live(slot, now) else "left" if record.left else "expired"
        rows.append(MemberRow(slot, record.identity, record.address, status, slot == roster.own))
    return tuple(rows)


def queue_rows(
    queues: Sequence[str], states: Mapping[str, StoredObject | None], served: Sequence[str]
) -> tuple[QueueRow, ...]:
    """Each queue's owner from its state object (``states``: by state key)."""
    rows = []
    for queue in queues:
        found = states.get(state_key(queue))
        if found is None:
            rows.append(QueueRow(queue, None, queue in served, "no state yet"))
            continue
        try:
            owner = decode_header(found.data).owner
        except OsqueueError as error:  # corrupt, or newer: shown, not judged
            rows.append(QueueRow(queue, None, queue in served, f"unreadable: {error}"))
            continue
        rows.append(QueueRow(queue, owner, queue in served))
    return tuple(rows)


def combined(snapshots: Sequence[BrokerStats]) -> BrokerStats | None:
    """The queue pages' snapshot over the queues a member serves: job counts summed,
    every queue listed, stalled if any is (None: it serves none). Its phase, epoch and
    revision are the first one's: the group page shows each queue's."""
    if not snapshots:
        return None
    stalled = [stats for stats in snapshots if stats.stalled]
    return attrs.evolve(
        snapshots[0],
        ready=sum(stats.ready for stats in snapshots),
        delayed=sum(stats.delayed for stats in snapshots),
        claimed=sum(stats.claimed for stats in snapshots),
        dead=sum(stats.dead for stats in snapshots),
        finished_pending_archive=sum(stats.finished_pending_archive for stats in snapshots),
        stalled=bool(stalled),
        last_storage_error=stalled[0].last_storage_error if stalled else "",
        queues=tuple(sorted((queue for stats in snapshots for queue in stats.queues), key=_name)),
    )


def _name(queue: object) -> str:
    return str(getattr(queue, "queue", ""))


class GroupMonitor:
    """The member ``identity`` of the group of ``queues`` on ``store`` (see the module
    docstring). ``config`` is the member's broker configuration (each queue's monitor
    gets it as :func:`~osqueue_io.group.layout.queue_config` sets it for the queue).
    The server sets :attr:`membership` once it made it, and :attr:`address`."""

    def __init__(
        self,
        store: ObjectStore,
        config: BrokerConfig,
        *,
        identity: str,
        address: str | None,
        queues: Sequence[str],
    ) -> None:
        self.store = store
        self.config = config
        self.identity = identity
        self.address = address
        self.queues = tuple(queues)
        #: One monitor per queue, which its slot attaches its runtimes to.
        self.monitors = {
            queue: BrokerMonitor(
                store, queue_config(config, queue), identity=identity, address=address
            )
            for queue in self.queues
        }
        self.membership: Membership | None = None

    def serving(self) -> dict[str, BrokerRuntime]:
        """Queue -> runtime, for the queues this member serves now (in group order)."""
        return {
            queue: runtime
            for queue, monitor in self.monitors.items()
            if (runtime := monitor.runtime) is not None and runtime.broker_phase is Phase.RUNNING
        }

    # -- the Monitor questions ---------------------------------------------------------

    def stats(self) -> BrokerStats | None:
        return combined([runtime.stats() for runtime in self.serving().values()])

    def runtime_stats(self) -> list[BrokerStats]:
        return [stats for monitor in self.monitors.values() for stats in monitor.runtime_stats()]

    def gauged(self) -> list[tuple[str | None, BrokerStats]]:
        return [(queue, runtime.stats()) for queue, runtime in self.serving().items()]

    def counters(self, current: Sequence[BrokerStats]) -> Counters:
        """Every queue's carried counters, plus ``current``'s."""
        counters = NO_COUNTS
        for monitor in self.monitors.values():
            counters = counters.add(monitor.counters())
        for stats in current:
            counters = counters.plus(stats)
        return counters

    def queues_served(self) -> int | None:
        return len(self.serving())

    def home_queue(self) -> str | None:
        """The queue the jobs and dead-letter pages show when none is named: the first
        this member serves (None: it serves none)."""
        return next(iter(self.serving()), None)

    async def runtime_for(self, queue: str | None) -> BrokerRuntime:
        """The runtime serving ``queue`` here; BadRequest naming its owner (as the
        queue's state in the bucket says) when another member serves it: its dashboard
        is that member's to show."""
        if queue is None:
            queue = self.home_queue()
            if queue is None:
                raise BadRequest(
                    "this group member serves no queue now: the group page shows who does", 503
                )
        monitor = self.monitors.get(queue)
        if monitor is None:
            raise BadRequest(f"queue {quote(queue)} is not one of this group's queues", 404)
        runtime = monitor.runtime
        if runtime is not None and runtime.broker_phase is Phase.RUNNING:
            return runtime
        owner = None
        with anyio.move_on_after(READ_TIMEOUT):
            owner = await queue_owner(self.store, queue)
        if owner is None or owner.released or owner.identity == self.identity:
            who = "no member now (its owner released it, or is taking it over)"
        else:
            address = quote(owner.address) if owner.address else "unknown"
            who = f"member {quote(owner.identity)} (gRPC at {address})"
        raise BadRequest(
            f"queue {queue} is not served by this member ({self.identity}) but by {who}: "
            "open that member's dashboard",
            409,
        )

    # -- the group page ----------------------------------------------------------------

    async def group(self) -> GroupView:
        """The members and every queue's owner (see the module docstring)."""
        membership = self.membership
        members = () if membership is None else member_rows(membership.roster, membership.clock())
        keys = [state_key(queue) for queue in self.queues]
        with anyio.move_on_after(READ_TIMEOUT) as scope:
            states = await self.store.read_many(keys)
        if scope.cancelled_caught:
            raise BadRequest(f"the queues' states were not read in {READ_TIMEOUT:g}s", 504)
        joined = membership is not None and membership.slot is not None
        return GroupView(members, queue_rows(self.queues, states, list(self.serving())), joined)
