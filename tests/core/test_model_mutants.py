"""The model test catches the bugs it is for: it is run against deliberately broken
brokers, each built from the public API only, and must fail on every one.

Before (hardening item 12): a change that added an extra, unacknowledged job on every
push passed the model test; only unit tests caught it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from osqueue_core import (
    Broker,
    BrokerNotRunning,
    Effect,
    Push,
    PushBatch,
    PushedBatch,
    Reply,
)

from .test_model import QueueModel

QUICK = settings(
    max_examples=300,
    stateful_step_count=40,
    phases=[Phase.generate],  # a failure is enough; no need to shrink it
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


class Mutant(Broker):
    """A broker that also submits commands of its own and hides their replies."""

    def take_effects(self) -> list[Effect]:
        return [
            e
            for e in super().take_effects()
            if not (isinstance(e, Reply) and isinstance(e.request_id, tuple))
        ]


class DoubleApply(Mutant):
    """Every push is applied twice: the second job is never acknowledged."""

    def submit(self, command: Any, now: float, wall: float | None = None) -> None:
        super().submit(command, now, wall)
        if isinstance(command, Push):
            super().submit(Push(("again", command.request_id), command.payload), now, wall)


class HalfBatch(Mutant):
    """A batch lands in two writes: half of it may land without the rest. Its reply
    still names every job, so only the batch's atomicity is broken."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_halves: dict[object, tuple[str, ...] | None] = {}

    def submit(self, command: Any, now: float, wall: float | None = None) -> None:
        if isinstance(command, PushBatch) and len(command.payloads) > 1:
            half = len(command.payloads) // 2
            hidden = PushBatch(("first half", command.request_id), command.payloads[:half])
            super().submit(hidden, now, wall)
            self.tick(now, wall)  # let the first half go out on its own
            command = PushBatch(command.request_id, command.payloads[half:])
        super().submit(command, now, wall)

    def take_effects(self) -> list[Effect]:
        effects: list[Effect] = []
        for effect in Broker.take_effects(self):
            if not isinstance(effect, Reply):
                effects.append(effect)
            elif isinstance(effect.request_id, tuple):
                result = effect.result
                ids = result.job_ids if isinstance(result, PushedBatch) else None
                self.first_halves[effect.request_id[1]] = ids
            elif effect.request_id in self.first_halves and isinstance(effect.result, PushedBatch):
                first = self.first_halves.pop(effect.request_id)
                if first is None:  # the first half failed: so does the whole, to its caller
                    effects.append(Reply(effect.request_id, error=BrokerNotRunning("mutant")))
                else:
                    ids = first + effect.result.job_ids
                    effects.append(Reply(effect.request_id, PushedBatch(ids)))
            else:
                effects.append(effect)
        return effects


@pytest.mark.parametrize("mutant", [DoubleApply, HalfBatch])
def test_the_model_test_fails_on_a_broken_broker(mutant: type[Broker]) -> None:
    machine = type(f"{mutant.__name__}Model", (QueueModel,), {"broker_class": mutant})
    with pytest.raises(AssertionError, match=r"one push|landed in part|holds a payload"):
        run_state_machine_as_test(machine, settings=QUICK)
