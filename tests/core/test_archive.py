"""Archive: after the commit, create-only, deterministic keys, exactly once across crashes."""

from __future__ import annotations

import orjson

from osqueue_core import BrokerConfig, JobStatus, WriteObject, archive_bucket, decode_state

from .harness import Harness, SimStore, archived_ids

HOUR = 3600.0
T0 = 1_795_000_000.0  # 2026-11-18T...


def test_completion_is_acked_after_one_write_then_archived_and_dropped() -> None:
    h = Harness.started(now=T0)
    h.push(b"p")
    job = h.claim().result.job_id  # type: ignore[union-attr]
    h.auto = False
    h.complete(job)
    assert h.pending_of(WriteObject, "archive/") == [], "no archive before the commit"
    h.deliver(0)  # the completion commit lands
    assert h.replies[max(h.replies)].ok  # type: ignore[type-var]
    [i] = h.pending_of(WriteObject, "archive/")
    key = h.pending[i].key  # type: ignore[union-attr]
    assert key.startswith(f"archive/{archive_bucket(T0, '%Y-%m-%dT%H')}/")
    h.deliver(i)
    while h.pending:
        h.deliver(0)
    assert decode_state(h.store.get("state.json")).jobs == []  # type: ignore[arg-type]
    record = orjson.loads(h.store.get(key))  # type: ignore[arg-type]
    assert record["key"] == key
    assert [j["id"] for j in record["jobs"]] == [job]
    assert record["jobs"][0]["status"] == "completed"


def test_hourly_buckets_and_configurable_format() -> None:
    h = Harness.started(now=T0, config=BrokerConfig(archive_bucket_format="%Y-%m-%d"))
    h.push()
    job = h.claim().result.job_id  # type: ignore[union-attr]
    h.complete(job)
    [key] = h.store.keys("archive/")
    assert key.split("/")[1] == archive_bucket(T0, "%Y-%m-%d")


def test_crash_between_archive_and_drop_does_not_duplicate() -> None:
    store = SimStore()
    a = Harness.started(store, now=T0)
    a.push()
    job = a.claim().result.job_id  # type: ignore[union-attr]
    a.auto = False
    a.complete(job)
    a.deliver(0)  # commit lands
    [i] = a.pending_of(WriteObject, "archive/")
    a.deliver(i)  # archive object written ... and then the broker dies before the drop
    # A successor finds the completed job still in the state and archives it again.
    b = Harness.started(store, identity="b", now=T0 + 1)
    assert archived_ids(store) == [job], "same key: found there, not written twice"
    assert decode_state(store.get("state.json")).jobs == []  # type: ignore[arg-type]
    assert b.broker.stats().finished_pending_archive == 0


def test_crash_before_archive_loses_nothing() -> None:
    store = SimStore()
    a = Harness.started(store, now=T0)
    a.push()
    job = a.claim().result.job_id  # type: ignore[union-attr]
    a.auto = False
    a.complete(job)
    a.deliver(0)  # commit lands; the archive write is never run
    stored = decode_state(store.get("state.json"))  # type: ignore[arg-type]
    assert stored.jobs[0].status is JobStatus.COMPLETED
    Harness.started(store, identity="b", now=T0 + 1)
    assert archived_ids(store) == [job]


def test_failed_archive_write_is_retried() -> None:
    h = Harness.started(now=T0, config=BrokerConfig(retry_initial=1, retry_max=1))
    h.push()
    job = h.claim().result.job_id  # type: ignore[union-attr]
    h.auto = False
    h.complete(job)
    h.deliver(0)
    [i] = h.pending_of(WriteObject, "archive/")
    h.deliver(i, "unknown_landed")  # landed, but we were told it failed
    assert h.broker.next_deadline() == h.now + 1
    h.advance(1)
    while h.pending:
        h.deliver(0)
    assert archived_ids(h.store) == [job]
    assert decode_state(h.store.get("state.json")).jobs == []  # type: ignore[arg-type]


def test_many_completions_in_one_batch_share_one_archive_object() -> None:
    h = Harness.started(now=T0)
    for _ in range(5):
        h.push()
    jobs = [h.claim(f"w{i}").result.job_id for i in range(5)]  # type: ignore[union-attr]
    h.auto = False
    for i, job in enumerate(jobs):
        h.complete(job, f"w{i}")
    while h.pending:
        h.deliver(0)
    assert sorted(archived_ids(h.store)) == sorted(jobs)
    assert len(h.store.keys("archive/")) == 2  # first completion alone, then four together


def finished_job_with_archive_pending(h: Harness) -> tuple[str, str]:
    """Complete a job and stop right before its archive write: (job id, archive key)."""
    h.push(b"mine")
    job = h.claim().result.job_id  # type: ignore[union-attr]
    h.auto = False
    h.complete(job)
    h.deliver(h.pending_of(WriteObject, "state.json")[0])  # the completion commit lands
    [i] = h.pending_of(WriteObject, "archive/")
    return job, h.pending[i].key  # type: ignore[union-attr]


def test_an_archive_key_holding_somebody_elses_jobs_is_never_taken_for_ours() -> None:
    """Before: a create that found its key taken was trusted as our own earlier write,
    and our jobs were dropped from the state unarchived (after a state rollback)."""
    h = Harness.started(now=T0)
    job, key = finished_job_with_archive_pending(h)
    theirs = b'{"schema_version":1,"key":"x","jobs":[{"id":"other","seq":0,"data":"eA=="}]}'
    h.store.put(key, theirs)
    h.auto = True
    h.flush()
    assert h.store.get(key) == theirs, "their object is left as it was"
    assert h.broker.stats().archive_collisions == 1
    assert h.broker.job(job) is None, "ours was archived elsewhere, then dropped"
    [other_key] = [k for k in h.store.keys("archive/") if k != key]
    assert [j["id"] for j in orjson.loads(h.store.get(other_key))["jobs"]] == [job]  # type: ignore[arg-type]
    assert other_key.split("/")[1] == key.split("/")[1], "same time bucket"


def test_a_damaged_object_under_our_key_counts_as_somebody_elses() -> None:
    h = Harness.started(now=T0)
    job, key = finished_job_with_archive_pending(h)
    h.store.put(key, b"not json")
    h.auto = True
    h.flush()
    assert h.store.get(key) == b"not json"
    [other_key] = [k for k in h.store.keys("archive/") if k != key]
    assert [j["id"] for j in orjson.loads(h.store.get(other_key))["jobs"]] == [job]  # type: ignore[arg-type]
    assert h.broker.job(job) is None


def test_our_own_earlier_archive_write_is_recognised_by_its_jobs() -> None:
    h = Harness.started(now=T0)
    job, _ = finished_job_with_archive_pending(h)
    [i] = h.pending_of(WriteObject, "archive/")
    h.deliver(i, "unknown_landed")  # landed; we were told "unknown"
    h.advance(1)
    h.deliver_all()
    assert h.broker.stats().archive_collisions == 0
    assert archived_ids(h.store) == [job]
