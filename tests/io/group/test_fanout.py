"""One claim over several queues' brokers: each in turn without waiting, then a race."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from osqueue_core import NotOwner
from osqueue_io.group.fanout import Rotation, Source, claim_first

pytestmark = pytest.mark.anyio


class Queue:
    """A source: jobs ready now, and jobs that arrive while a claim waits."""

    def __init__(self, name: str, ready: int = 0) -> None:
        self.name = name
        self.ready = [f"{name}{n}" for n in range(ready)]
        self.arrived = anyio.Event()
        self.late: list[str] = []
        self.calls: list[tuple[float, int]] = []
        self.cancelled = False

    async def __call__(self, wait: float, count: int) -> list[str]:
        self.calls.append((wait, count))
        if not self.ready and wait > 0:
            try:
                await self.arrived.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled = True
                raise
            self.ready, self.late = self.late, []
        taken, self.ready = self.ready[:count], self.ready[count:]
        return taken


def sources(*queues: Queue) -> list[Source[str]]:
    return list(queues)


async def test_one_source_is_asked_once_with_the_whole_wait() -> None:
    only = Queue("a", ready=0)
    only.late = ["a9"]
    only.arrived.set()
    assert await claim_first(sources(only), 3, 5.0, Rotation()) == (["a9"], [])
    assert only.calls == [(5.0, 3)]


async def test_without_waiting_each_source_in_turn_until_enough_starting_in_turn() -> None:
    a, b, c = Queue("a", 1), Queue("b", 5), Queue("c", 5)
    rotation = Rotation()
    taken, extra = await claim_first(sources(a, b, c), 3, 10.0, rotation)
    assert (taken, extra) == (["a0", "b0", "b1"], [])
    assert [q.calls for q in (a, b, c)] == [[(0.0, 3)], [(0.0, 2)], []]
    taken, _ = await claim_first(sources(a, b, c), 1, 10.0, rotation)
    assert taken == ["b2"], "the next claim starts at the next source"
    taken, _ = await claim_first(sources(a, b, c), 1, 10.0, rotation)
    assert taken == ["c0"]


async def test_nothing_ready_waits_on_all_the_first_answer_wins_the_rest_are_cancelled() -> None:
    a, b, c = Queue("a"), Queue("b"), Queue("c")
    b.late = ["b7"]
    async with anyio.create_task_group() as tasks:
        result: list[tuple[list[str], list[str]]] = []

        async def claim() -> None:
            result.append(await claim_first(sources(a, b, c), 1, 30.0, Rotation()))

        tasks.start_soon(claim)
        await anyio.wait_all_tasks_blocked()
        assert [q.calls[-1] for q in (a, b, c)] == [(30.0, 1)] * 3, "all wait"
        b.arrived.set()
    assert result == [(["b7"], [])]
    assert [q.cancelled for q in (a, b, c)] == [True, False, True]


async def test_grants_that_arrive_in_the_same_moment_come_back_as_extra() -> None:
    a, b = Queue("a"), Queue("b")
    a.late, b.late = ["a1"], ["b1"]
    async with anyio.create_task_group() as tasks:
        result: list[tuple[list[str], list[str]]] = []

        async def claim() -> None:
            result.append(await claim_first(sources(a, b), 1, 30.0, Rotation()))

        tasks.start_soon(claim)
        await anyio.wait_all_tasks_blocked()
        a.arrived.set()
        b.arrived.set()
    [(taken, extra)] = result
    assert sorted(taken + extra) == ["a1", "b1"]
    assert len(taken) == 1, "the caller gets what it asked for; the rest is given back"


async def test_no_wait_and_nothing_ready_is_empty_and_errors_reach_the_caller() -> None:
    assert await claim_first(sources(Queue("a"), Queue("b")), 1, 0.0, Rotation()) == ([], [])

    async def refuses(wait: float, count: int) -> list[str]:
        raise NotOwner("m2", 3, "127.0.0.1:2")

    with pytest.raises(NotOwner):
        await claim_first([Queue("a"), refuses], 1, 1.0, Rotation())


async def test_a_failing_source_never_drops_what_others_granted() -> None:
    async def gone(wait: float, count: int) -> list[str]:
        raise NotOwner("", 0, None)

    ready = Queue("a", 2)
    taken, _ = await claim_first([ready, gone], 5, 1.0, Rotation())
    assert taken == ["a0", "a1"]

    async def gone_while_waiting(wait: float, count: int) -> list[str]:
        if wait:
            await anyio.lowlevel.checkpoint()
            raise NotOwner("", 0, None)
        return []

    waiting = Queue("b")
    with pytest.raises(NotOwner):
        await claim_first([waiting, gone_while_waiting], 1, 30.0, Rotation())
    assert waiting.cancelled, "a failure stops the wait at once"
