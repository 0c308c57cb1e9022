"""How a group member decides what to hold and what to give away: pure rules.

With ``Q`` queues and ``L`` live members, every member's **quota** is ``Q // L``, plus
one for the first ``Q % L`` members in slot order (every member sees the same live
members in the same order, so the quotas add up to exactly ``Q`` and differ by one at
most: the group is balanced by count). A member that owns (or is taking over) its
quota or more holds the takeovers of its standbys (``Broker.hold_takeover``), so that
a lapsed or released queue goes to a member below its quota; one that owns more
releases one queue at a time (a graceful stop of that queue's broker: a member below
its quota takes it over at once) and stands by for it again, held. If every queue
has an owner, every member is at its quota; if one has none, some member is below its
quota and takes it.

Releases are paced: the next one waits until the queue released last has a new owner
or a lease has passed, so a member whose view of the group is stale for a moment gives
away one queue too many at most, and a queue nobody takes comes back to it (a hold
delays a takeover by one lease at most) without a release storm. Which queue goes:
the one this member took over last (those it has served longest stay put).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs


def quota(queues: int, live: int, rank: int) -> int:
    """How many of ``queues`` the member at ``rank`` (0-based, in slot order) among
    ``live`` members should own."""
    live = max(1, live)
    return queues // live + (1 if rank < queues % live else 0)


@attrs.frozen
class Decision:
    """What a member does now: hold its standbys' takeovers or not, and the queue to
    release (None: none)."""

    hold: bool
    release: str | None = None


class Balancer:
    """The balance rules of one member of a group of ``queues`` queues; ``lease`` paces
    releases. Call :meth:`decide` whenever what it owns or who is live may have changed."""

    def __init__(self, queues: int, lease: float) -> None:
        self.queues = queues
        self.lease = lease
        #: The queue released last, and when (our clock), until it has a new owner.
        self._released: tuple[str, float] | None = None
        #: Releases decided, for monitoring.
        self.releases = 0

    def decide(
        self, owned: int, serving: Sequence[str], live: int, rank: int, now: float
    ) -> Decision:
        """``owned``: queues this member serves or is taking over; ``serving``: those it
        serves, in the order it took them; ``live`` members, this one at ``rank``."""
        target = quota(self.queues, live, rank)
        hold = owned >= target
        if owned <= target or not serving or self._pacing(now):
            return Decision(hold)
        self._released = (serving[-1], now)
        self.releases += 1
        return Decision(hold, serving[-1])

    def taken(self, queue: str) -> None:
        """The queue released last has a new owner (another member, or this one back):
        the next release may go."""
        if self._released is not None and self._released[0] == queue:
            self._released = None

    @property
    def pending(self) -> str | None:
        """The queue released last, while it waits for a new owner."""
        return None if self._released is None else self._released[0]

    def _pacing(self, now: float) -> bool:
        if self._released is None:
            return False
        if now - self._released[1] >= self.lease:
            self._released = None
            return False
        return True
