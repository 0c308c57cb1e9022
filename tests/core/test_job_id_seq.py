"""``BrokerConfig.job_id_seq``: a custom id factory with its inverse still spills.

A broker finds a job spilled into a segment by its id through the seq the id was made
for; the default factory's ids are inverted by ``default_job_seq``, a custom factory's
by the ``job_id_seq`` it is given (a scale-out group's ids carry their queue:
``emails/000000000007-3``). Without an inverse a custom factory never spills.
"""

from __future__ import annotations

import pytest

from osqueue_core import Cancel, Cancelled, GetJob, JobInfo, JobNotFound, decode_state

from .harness import Harness, SimStore
from .test_segments import claim_all, config, push_ids


def queue_id(epoch: int, seq: int) -> str:
    return f"mail/{seq:012d}-{epoch}"


def queue_seq(job_id: str) -> int | None:
    rest = job_id.partition("/")[2]
    seq, epoch = rest.split("-")  # raises on ids it did not make: counts as None
    return int(seq) if queue_id(int(epoch), int(seq)) == job_id else None


def test_the_inverse_is_checked_against_the_factory_when_configured() -> None:
    assert not config(job_id_factory=queue_id).spills, "no inverse: never spills"
    assert config(job_id_factory=queue_id, job_id_seq=queue_seq).spills
    with pytest.raises(ValueError, match="inverse"):
        config(job_id_factory=queue_id, job_id_seq=lambda job_id: 7)
    with pytest.raises(ValueError, match="function"):
        config(job_id_factory=queue_id, job_id_seq="seq")
    assert config().seq_of("000000000012-3") == 12
    assert config().seq_of("12-3") is None
    custom = config(job_id_factory=queue_id, job_id_seq=queue_seq)
    assert custom.seq_of("mail/000000000012-3") == 12
    assert custom.seq_of("not an id") is None, "the inverse raised: not one of its ids"
    assert custom.seq_of("video/000000000012-3") is None


def test_a_custom_factory_with_its_inverse_spills_and_finds_its_jobs_by_id() -> None:
    custom = config(job_id_factory=queue_id, job_id_seq=queue_seq)
    h = Harness.started(SimStore(), custom)
    ids = push_ids(h, 5)
    assert ids[0] == "mail/000000000000-1"
    assert h.broker.stats().untouched == 4, "the first four spilled"
    # A successor knows the jobs only by their segment's reference: each lookup by id
    # goes through the inverse.
    successor = Harness.started(h.store, custom, identity="b")
    info = successor.submit(GetJob(successor.request_id(), ids[1]))
    assert info is not None
    assert isinstance(info.result, JobInfo)
    assert info.result.id == ids[1]
    cancelled = successor.submit(Cancel(successor.request_id(), ids[2]))
    assert cancelled is not None
    assert cancelled.result == Cancelled(ids[2], True)
    for garbage in ("mail/x-1", "x", "video/000000000002-1", "000000000002-1"):
        missing = successor.submit(GetJob(successor.request_id(), garbage))
        assert missing is not None
        assert isinstance(missing.error, JobNotFound), garbage
    assert claim_all(successor) == [ids[0], ids[1], ids[3], ids[4]]


def test_without_an_inverse_the_backlog_stays_inline() -> None:
    h = Harness.started(SimStore(), config(job_id_factory=queue_id))
    ids = push_ids(h, 6)
    stored = decode_state(h.store.get("state.json"))  # type: ignore[arg-type]
    assert [job.id for job in stored.jobs] == ids
    assert h.broker.stats().untouched == 0
