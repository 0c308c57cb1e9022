"""``GET /metrics`` of a real broker process, scraped over HTTP after known operations
and parsed with prometheus_client's own parser: the values are the queue's."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from osqueue_io.storage import open_store
from osqueue_io.sync import RemoteQueue

from .conftest import WebBroker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def scrape_until(url: str, ready: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    """Scrape until ``ready`` (a lease has to run out first); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)  # polling a scrape endpoint, as Prometheus would


def test_metrics_count_what_the_queue_did(web_broker: WebBroker) -> None:
    with RemoteQueue(web_broker.address, bytes, worker_id="w1") as queue:
        queue.push_many([b"m1", b"m2", b"m3", b"m4", b"m5"], queue="mail")
        queue.push(b"w1", queue="web")
        queue.push(b"w2", queue="web", delay=3600)
        job = queue.claim(queues=["mail"])
        assert job is not None
        assert not queue.fail(job, "first try")  # retried at once (attempt 1 of 2)
        again = queue.claim(queues=["mail"])
        assert again is not None
        assert again.id == job.id
        assert queue.fail(again, "second try")  # dead: out of attempts
        done = queue.claim(queues=["mail"])
        assert done is not None
        queue.complete(done)
        stats = {info.queue: info for info in queue.queue_stats()}

    samples = scrape(web_broker.metrics)
    for name in ("mail", "web"):
        for status in ("ready", "delayed", "claimed", "dead"):
            expected = getattr(stats[name], status)
            assert value(samples, "osqueue_jobs", queue=name, status=status) == expected
    assert value(samples, "osqueue_jobs", queue="mail", status="ready") == 3
    assert value(samples, "osqueue_jobs", queue="mail", status="dead") == 1
    assert value(samples, "osqueue_jobs", queue="web", status="delayed") == 1
    assert value(samples, "osqueue_retries_total") == 1
    assert value(samples, "osqueue_dead_letters_total") == 1
    assert value(samples, "osqueue_expired_leases_total") == 0
    assert value(samples, "osqueue_takeovers_total") == 1
    assert value(samples, "osqueue_fenced_total") == 0
    assert value(samples, "osqueue_state_write_conflicts_total") == 0
    assert value(samples, "osqueue_broker_phase", phase="running") == 1
    assert value(samples, "osqueue_broker_phase", phase="standby") == 0
    assert value(samples, "osqueue_oldest_ready_age_seconds", queue="mail") >= 0
    # Nine acknowledged requests needed a write: a batch push, two pushes, four claims
    # and fails, a claim and a complete (each commit counted once, in both histograms).
    commits = value(samples, "osqueue_commit_latency_seconds_count")
    assert commits == value(samples, "osqueue_commit_operations_count")
    assert 1 <= commits <= value(samples, "osqueue_state_writes_total")
    assert value(samples, "osqueue_commit_operations_sum") >= 9
    assert value(samples, "osqueue_commit_latency_seconds_bucket", le="+Inf") == commits
    assert value(samples, "osqueue_commit_latency_seconds_sum") > 0

    async def stored_bytes() -> int:
        store = open_store(web_broker.data)
        try:
            found = await store.read("state.json")
            assert found is not None
            return len(found.data)
        finally:
            await store.aclose()

    # The completion is archived off the acknowledgement path: the backlog drains to 0.
    drained = scrape_until(
        web_broker.metrics, lambda s: value(s, "osqueue_archive_backlog_jobs") == 0
    )
    assert value(drained, "osqueue_archive_backlog_jobs") == 0
    # The state's size is the stored object's, read between two scrapes that agree (a
    # write after the archive, or a lease renewal, may be issued or land between a
    # scrape and the read).
    names = ("osqueue_state_writes_total", "osqueue_state_bytes")
    for _ in range(10):
        before = scrape(web_broker.metrics)
        stored = anyio.run(stored_bytes)
        after = scrape(web_broker.metrics)
        if all(value(before, name) == value(after, name) for name in names):
            assert value(before, "osqueue_state_bytes") == stored
            break
    else:
        pytest.fail("the state was written between every scrape and read")


def test_an_expired_lease_is_counted_with_its_retry(tmp_path: Path) -> None:
    broker = WebBroker(str(tmp_path / "queue"), "--heartbeat-timeout", "1s", "--retry-base", "0")
    try:
        with RemoteQueue(broker.address, bytes) as queue:
            queue.push(b"x")
            assert queue.claim() is not None  # never heartbeats
            samples = scrape_until(
                broker.metrics, lambda s: value(s, "osqueue_expired_leases_total") == 1
            )
        assert value(samples, "osqueue_expired_leases_total") == 1
        assert value(samples, "osqueue_retries_total") == 1
        assert value(samples, "osqueue_jobs", queue="default", status="claimed") == 0
        # The dashboard's listener serves the same metrics.
        assert value(scrape(broker.dashboard), "osqueue_expired_leases_total") == 1
    finally:
        broker.kill()
