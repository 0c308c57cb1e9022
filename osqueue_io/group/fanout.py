"""One claim over several queues that live in different state objects.

In a scale-out group each queue is its own state object, so a claim naming several
queues cannot be one command: a member serving them all asks each queue's broker, and
a client whose queues have different owners asks each owner. :func:`claim_first` is
that fan-out, for both:

1. without waiting, each source in turn (the first one changes from call to call, so
   no queue starves another), until ``count`` jobs are taken;
2. if none was, and the caller may wait: every source at once, waiting; the first to
   answer with jobs wins and the others are cancelled.

A cancelled source must give back what it was granted (a member's brokers do: a
cancelled claim is withdrawn, or its job released without counting an attempt). A
grant that still arrives after the winner (two sources answered at once) is returned
in ``extra``, for the caller to release. A source that fails (its queue moved, its
member is gone) ends the fan-out: with the jobs already granted, if any (they are
never dropped), else with its error, so the caller looks for the owner again.
Priorities are honoured within a queue, not across queues of different state objects
(docs/high-availability.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from osqueue_core import OsqueueError

J = TypeVar("J")

#: ``source(wait, count)``: claim up to ``count`` jobs, waiting up to ``wait`` seconds.
Source = Callable[[float, int], Awaitable[list[J]]]


class Rotation:
    """Where the next fan-out starts: a counter shared by the calls of one server or
    client, so consecutive claims start at different sources."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def order(self, sources: Sequence[J]) -> list[J]:
        if len(sources) < 2:
            return list(sources)
        start = next(self._counter) % len(sources)
        return [*sources[start:], *sources[:start]]


async def claim_first(
    sources: Sequence[Source[J]], count: int, wait: float, rotation: Rotation
) -> tuple[list[J], list[J]]:
    """``(taken, extra)``: at most ``count`` jobs taken from ``sources`` (see the module
    docstring), and jobs granted beyond them, to give back."""
    if len(sources) == 1:
        return await sources[0](wait, count), []
    taken: list[J] = []
    for source in rotation.order(sources):
        try:
            taken.extend(await source(0.0, count - len(taken)))
        except OsqueueError:
            if taken:
                return taken, []  # what was granted is the caller's: never dropped
            raise
        if len(taken) >= count:
            return taken, []
    if taken or wait <= 0:
        return taken, []
    won: list[J] = []
    extra: list[J] = []
    failed: list[OsqueueError] = []

    async with anyio.create_task_group() as race:

        async def wait_on(source: Source[J]) -> None:
            try:
                jobs = await source(wait, count)
            except OsqueueError as error:
                # Stop waiting: the caller must look for that queue's owner again.
                failed.append(error)
                race.cancel_scope.cancel()
                return
            if not jobs:
                return
            if won:
                extra.extend(jobs)  # answered in the same moment as the winner
                return
            won.extend(jobs)
            race.cancel_scope.cancel()

        for source in sources:
            race.start_soon(wait_on, source)
    if not won and failed:
        raise failed[0]
    return won, extra
