"""The model test's history audit (tests/core/model_history.py) judges a claim by the
wall clocks the broker that made it has seen: a successor whose clock is behind a job's
run-at must not claim it, even though its predecessor's clock had passed it."""

from __future__ import annotations

import attrs
import pytest

from osqueue_core import (
    BrokerConfig,
    Job,
    JobSpec,
    JobStatus,
    Owner,
    StateHeader,
    encode_job,
    encode_state,
)

from .model_basics import Timeline
from .model_history import Asked, audit_history

RUN_AT = 1_795_000_010.0


def _version(incarnation: str, epoch: int, revision: int, job: Job) -> bytes:
    header = StateHeader(3, revision, Owner(incarnation, incarnation, epoch), 1)
    return encode_state(header, [encode_job(job)])


def _audit(claimed_by: str, started: dict[str, int]) -> None:
    """Step 0..1: broker "a" (wall past the run-at) writes the ready job; the wall
    steps back; step 2..3: ``claimed_by`` writes it claimed."""
    timeline = Timeline([RUN_AT - 5.0, RUN_AT + 1.0, RUN_AT - 2.0, RUN_AT - 2.0])
    ready = Job("000000000000-1", 0, JobSpec(b"x", RUN_AT - 20.0, run_at=RUN_AT))
    claimed = attrs.evolve(
        ready, status=JobStatus.CLAIMED, attempts=1, claimed_by="w", claimed_at=RUN_AT - 2.0
    )
    first = _version("a", 1, 1, ready)
    second = _version(claimed_by, 2 if claimed_by == "b" else 1, 2, claimed)
    emitted = {first: 0, second: 2}
    asked = Asked(BrokerConfig(), timeline, emitted, [], [], {}, set(), started)
    audit_history([(1, first), (3, second)], asked)


def test_a_claim_by_the_broker_that_saw_the_run_at_passes() -> None:
    _audit("a", {"a": 0, "b": 2})


def test_a_claim_by_a_successor_whose_clock_never_reached_the_run_at_is_caught() -> None:
    with pytest.raises(AssertionError, match="claimed before its run-at"):
        _audit("b", {"a": 0, "b": 2})
