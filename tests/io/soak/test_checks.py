"""The soak's checks catch what they claim to: each fault is planted in a small,
otherwise consistent ledger and storage, and must fail its check (and only pass when
absent). No broker, no I/O: the objects are encoded with osqueue_core's codec."""

from __future__ import annotations

import attrs
import pytest

from osqueue_core import (
    DEFAULT_QUEUE,
    SCHEMA_VERSION,
    Job,
    JobSpec,
    JobStatus,
    Owner,
    SegmentGroup,
    SegmentRef,
    StateHeader,
    encode_archive,
    encode_job,
    encode_ref,
    encode_state,
)
from tests.io.soak.checks import Verdict, verify
from tests.io.soak.ledger import Grant, Ledger, PayloadName, make_payload

KEY = "archive/2026-12-01T17/000001-0000000004.json"
RELEASED = encode_state(StateHeader(SCHEMA_VERSION, 9, Owner("b", "i", 1, released=True), 10), [])


def payload(seq: int, attempt: int = 1, item: int = 0, kind: str = "s") -> bytes:
    return make_payload(PayloadName(0, kind, seq, item, attempt), padding=3)


def completed(job_id: str, seq: int, data: bytes, worker: str = "w1", attempts: int = 1) -> Job:
    return Job(
        job_id,
        seq,
        JobSpec(data, created_at=1.0),
        status=JobStatus.COMPLETED,
        attempts=attempts,
        claimed_by=worker,
        claimed_at=2.0,
        finished_at=3.0,
        archive_key=KEY,
    )


def grant(job_id: str, data: bytes, worker: str, sent_at: float, attempts: int = 1) -> Grant:
    return Grant(worker, job_id, data, attempts, 3.0, sent_at, sent_at + 0.01, sent_at + 3.0)


@attrs.define
class World:
    """Two pushes (one retried: its first attempt got no answer and did not land), each
    claimed and completed once, archived in one object."""

    ledger: Ledger = attrs.Factory(Ledger)
    archived: list[Job] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.push(0, "j0", attempt=1, acked=False)
        self.push(0, "j0", attempt=2)
        self.push(1, "j1")
        self.archived += [completed("j0", 0, payload(0, 2)), completed("j1", 1, payload(1))]
        for seq, job_id in enumerate(["j0", "j1"]):
            data = self.archived[seq].payload
            self.ledger.grants.append(grant(job_id, data, "w1", sent_at=10.0 * seq))
            self.ledger.complete_acked(job_id, "w1", 10.0 * seq + 1)

    def push(self, seq: int, job_id: str, attempt: int = 1, acked: bool = True) -> None:
        name = PayloadName(0, "s", seq, 0, attempt)
        call = self.ledger.push_sent(name, (make_payload(name, 3),), now=float(seq))
        if acked:
            self.ledger.push_acked(call, (job_id,))

    def verdict(self) -> Verdict:
        data = encode_archive(KEY, [encode_job(job) for job in self.archived])
        return verify(self.ledger, RELEASED, {KEY: data})


def failed(verdict: Verdict) -> dict[str, list[str]]:
    return {check.name: check.evidence for check in verdict.checks if not check.passed}


def test_a_consistent_world_passes() -> None:
    verdict = World().verdict()
    assert failed(verdict) == {}
    assert verdict.figures["lost (must be 0)"] == 0
    assert verdict.figures["unacknowledged pushes that landed (calls/jobs)"] == "0/0"


def test_an_unanswered_attempt_that_landed_is_a_duplicate_not_a_failure() -> None:
    world = World()
    world.archived.append(completed("j9", 9, payload(0, 1)))
    verdict = world.verdict()
    assert failed(verdict) == {}
    assert verdict.figures["unacknowledged pushes that landed (calls/jobs)"] == "1/1"
    assert verdict.figures["duplicates from retried pushes (jobs)"] == 1


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("lost", "every acknowledged push was completed and archived, as answered"),
        ("archived twice", "no job id (or seq) appears twice across the archive objects"),
        ("invented", "every job carries a payload a publisher sent (nothing invented)"),
        ("applied twice", "no push applied twice; a batch lands whole or not at all"),
        ("half a batch", "no push applied twice; a batch lands whole or not at all"),
        ("completed twice", "no job's Complete was acknowledged twice"),
        ("held twice", "no job was handed to a worker while another held it"),
        ("left in state", "no job is left in the state (or its segments) after the drain"),
        ("left in a segment", "no job is left in the state (or its segments) after the drain"),
        ("client error", "clients saw no unexpected error"),
    ],
)
def test_each_fault_fails_its_check(fault: str, check: str) -> None:
    world = World()
    state = RELEASED
    if fault == "lost":
        world.archived.pop()
    elif fault == "archived twice":
        world.archived.append(world.archived[0])
    elif fault == "invented":
        world.archived.append(completed("j7", 7, b"soak:p0:s77:i0:a1:"))
    elif fault == "applied twice":
        world.archived.append(completed("j8", 8, world.archived[1].payload))
    elif fault == "half a batch":
        name = PayloadName(0, "b", 5, 0, 1)
        both = (make_payload(name, 0), make_payload(attrs.evolve(name, item=1), 0))
        world.ledger.push_sent(name, both, now=5.0)
        world.archived.append(completed("j5", 5, both[0]))
    elif fault == "completed twice":
        world.ledger.complete_acked("j1", "w2", 12.0)
    elif fault == "held twice":
        # w2 is handed j1 one second into w1's three-second lease.
        world.ledger.grants.append(grant("j1", world.archived[1].payload, "w2", 11.0, 2))
        world.archived[1] = attrs.evolve(world.archived[1], attempts=2)
    elif fault == "left in state":
        ready = Job("j6", 6, JobSpec(payload(1), created_at=1.0))
        state = encode_state(
            StateHeader(SCHEMA_VERSION, 9, Owner("b", "i", 1, released=True), 10),
            [encode_job(ready)],
        )
    elif fault == "left in a segment":
        group = SegmentGroup(DEFAULT_QUEUE, 2, 0, 6, 1.0)
        ref = SegmentRef("segments/000001-0000000001.json", "0" * 32, 100, 2, (6, 7), (group,))
        state = encode_state(
            StateHeader(SCHEMA_VERSION, 9, Owner("b", "i", 1, released=True), 10),
            [],
            encoded_refs=encode_ref(ref),
        )
    elif fault == "client error":
        world.ledger.unexpected.append("Claim: OsqueueError: INTERNAL")
    data = encode_archive(KEY, [encode_job(job) for job in world.archived])
    verdict = verify(world.ledger, state, {KEY: data})
    assert check in failed(verdict), failed(verdict)
