"""The web dashboard in a real headless Chromium (Debian's ``chromium``, driven by
Playwright), against a real broker process: every page loads, its numbers are the
queue's (as the client's ``queue_stats`` reports them), untrusted text stays text, and
the redrive and purge buttons change the queue (checked through the client).

Screenshots of every page go to the test's temporary directory, and also to
``$OSQUEUE_SCREENSHOTS`` when set (``make screenshots`` refreshes docs/screenshots/).
Chromium missing is a failure, not a skip: ``make tools`` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from osqueue_io.sync import RemoteQueue

from .conftest import WebBroker

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: What a hostile worker might put in an error text: it must show as text.
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed: run `make tools` (apt-get install chromium)")
    return found


@pytest.fixture
def browser() -> Iterator[Browser]:
    # Playwright starts Chromium with a fresh, empty profile directory of its own (it
    # refuses --user-data-dir), removed when the browser closes.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Shots:
    """Saves each page's screenshot under a name (see the module docstring)."""

    def __init__(self, tmp_path: Path) -> None:
        self.folders = [tmp_path / "screenshots"]
        extra = os.environ.get("OSQUEUE_SCREENSHOTS")
        if extra:
            self.folders.append(Path(extra))
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> None:
        data = page.screenshot(full_page=True)
        for folder in self.folders:
            (folder / f"{name}.png").write_bytes(data)


def open_page(page: Page, url: str) -> None:
    response = page.goto(url)
    assert response is not None
    assert response.status == 200, f"{url}: {response.status} {page.content()[:500]}"


def cell(page: Page, table: str, row: str, field: str) -> str:
    return page.locator(f'#{table} tr[data-queue="{row}"] [data-field="{field}"]').inner_text()


def test_every_page_shows_the_queue_and_the_buttons_work(
    web_broker: WebBroker, browser: Browser, tmp_path: Path
) -> None:
    shots = Shots(tmp_path)
    base = web_broker.dashboard
    errors: list[str] = []
    with RemoteQueue(web_broker.address, bytes, worker_id="worker-7") as queue:
        queue.push_many([b"a", b"b", b"c"], queue="emails")
        queue.push(b"r1", queue="reports", priority=5, key="monthly-2026-12")
        queue.push(b"r2", queue="reports", delay=3600)
        done = queue.claim(queues=["emails"])
        assert done is not None
        queue.complete(done, result=b"sent")
        holding = queue.claim(queues=["emails"])  # stays claimed by worker-7
        assert holding is not None
        for payload in (b"m1", b"m2"):
            queue.push(payload, queue="media")
        dead_ids = []
        for _ in range(2):
            job = queue.claim(queues=["media"])
            assert job is not None
            assert queue.fail(job, HOSTILE, retry=False)
            dead_ids.append(job.id)
        stats = {info.queue: info for info in queue.queue_stats()}

        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.on("dialog", lambda dialog: errors.append(f"a dialog opened: {dialog.message}"))
        page.on("pageerror", lambda error: errors.append(f"script error: {error}"))

        # Queues: the depths are the client's, and the chart draws after two polls.
        open_page(page, base + "/")
        for name, info in stats.items():
            for field in ("ready", "delayed", "claimed"):
                assert cell(page, "queues", name, field) == str(getattr(info, field)), (
                    name,
                    field,
                )
            assert cell(page, "queues", name, "dead") == str(info.dead)
        expect(page.locator("#total-dead")).to_have_text("2")
        shots.take(page, "queues")

        # Jobs: all, then filtered; the claimed one shows its holder.
        open_page(page, base + "/jobs")
        live = sum(i.ready + i.delayed + i.claimed + i.dead for i in stats.values())
        rows = page.locator("#jobs tbody tr[data-job]")
        finished = rows.filter(has=page.locator(".status-completed")).count()
        assert (live, finished) in ((6, 0), (6, 1))  # the completed one may await its archive
        assert rows.count() == live + finished
        expect(rows.filter(has_text="delayed")).to_have_count(1)
        shots.take(page, "jobs")
        open_page(page, base + "/jobs?queue=emails&status=claimed")
        rows = page.locator("#jobs tbody tr[data-job]")
        assert rows.count() == 1
        assert holding.id in rows.first.inner_text()
        assert "worker-7" in rows.first.inner_text()
        open_page(page, base + "/jobs?queue=reports")
        assert page.locator("#jobs tbody tr[data-job]").count() == 2

        # A job's detail, from the state.
        open_page(page, base + f"/job?id={dead_ids[0]}")
        expect(page.locator("#job-status")).to_have_text("dead")
        expect(page.locator("#job-error")).to_have_text(HOSTILE)
        expect(page.locator("#job-history")).to_contain_text("pushed to media")
        shots.take(page, "job")

        # Dead letters: the hostile error is text; redrive one, purge the other.
        open_page(page, base + "/dead")
        assert page.locator("#dead tbody tr[data-job]").count() == 2
        expect(page.locator(f'#dead tr[data-job="{dead_ids[0]}"] .error-text')).to_have_text(
            HOSTILE
        )
        shots.take(page, "dead-letters")
        page.locator(f'#dead tr[data-job="{dead_ids[0]}"] button.redrive').click()
        expect(page.locator("#done")).to_contain_text("Redriven: 1")
        assert queue.get(dead_ids[0]).status == "ready"
        page.locator(f'#dead tr[data-job="{dead_ids[1]}"] button.purge').click()
        expect(page.locator("#done")).to_contain_text("Purged: 1")
        assert queue.dead_letters() == []
        assert page.locator("#dead tbody tr[data-job]").count() == 0
        media = {info.queue: info for info in queue.queue_stats()}["media"]
        assert (media.ready, media.dead) == (1, 0)

        # The archive: the completed job's bucket, then the job as archived.
        open_page(page, base + "/archive")
        bucket = page.locator("#buckets tbody tr").filter(has=page.locator("a")).first
        expect(bucket).to_be_visible(timeout=15_000)
        shots.take(page, "archive")
        bucket.locator("a").click()
        expect(page.locator(f'#archived tr[data-job="{done.id}"]')).to_contain_text("completed")
        shots.take(page, "archive-bucket")
        page.locator(f'#archived tr[data-job="{done.id}"] a').click()
        expect(page.locator("#job-status")).to_have_text("completed")
        expect(page.locator("#job-detail")).to_contain_text("4 bytes")  # its result

        # The broker: who owns the queues.
        open_page(page, base + "/broker")
        expect(page.locator("#broker-phase")).to_have_text("running")
        expect(page.locator("#owners")).to_contain_text("emails")
        shots.take(page, "broker")
        # The live chart: traffic while the page polls shows as a rate above zero.
        open_page(page, base + "/")
        deadline = time.monotonic() + 30
        ops = page.locator("#ops-line")
        while not (
            re.fullmatch(r"[1-9]\d*\.\d", page.locator("#ops-peak").inner_text())
            and (ops.get_attribute("points") or "").count(",") >= 3  # three samples drawn
        ):
            assert time.monotonic() < deadline, "the chart never showed the traffic"
            queue.push_many([b"t"] * 5, queue="bulk")
        expect(page.locator("#total-ready")).not_to_have_text("3")  # the bulk jobs count
        shots.take(page, "queues")
    assert errors == []


def test_bad_requests_get_a_clear_error_page(web_broker: WebBroker, browser: Browser) -> None:
    page = browser.new_page()
    base = web_broker.dashboard
    for path, status, says in [
        ("/jobs?status=sleeping", 400, "status must be one of"),
        ("/jobs?queue=%3Cb%3Ex%3C/b%3E", 400, "queue"),
        ("/jobs?limit=100000", 400, "limit must be between 1 and 500"),
        ("/job?id=nope", 404, "JobNotFound"),
        ("/archive/bucket?name=../state.json", 400, "bucket"),
        ("/job?id=x&archive=state.json", 400, "not an archive key"),
        ("/jobs?" + "q=x&" * 600, 414, "longer than"),
    ]:
        response = page.goto(base + path)
        assert response is not None
        assert response.status == status, path
        expect(page.locator("#error-message")).to_contain_text(says)
        assert page.locator("b").filter(has_text="x").count() == 0  # no markup injected
