"""The dashboard and metrics of scale-out group members: three real member processes on
127.0.0.1 with ``--http-listen`` and ``--metrics-listen``, a six-queue group balanced
2/2/2. Each member's group page names, for every queue, the owner the queue's state in
the bucket names (fetched over HTTP, and in headless Chromium: the screenshot is
docs/screenshots/group.png when ``$OSQUEUE_SCREENSHOTS`` is set); its metrics count the
jobs pushed to the queues it serves, and only those; a queue it does not serve is
answered 409 naming the member that does.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from playwright.sync_api import Browser
from prometheus_client.parser import text_string_to_metric_families

from osqueue_io.sync import RemoteQueue
from tests.io.distributed.conftest import ChildProcess
from tests.io.distributed.test_group import QUEUES, balanced, members, owners, start
from tests.io.http.conftest import http_urls
from tests.io.http.test_dashboard_browser import Shots, browser, open_page

__all__ = ["browser", "members"]  # fixtures, used by name

T = TypeVar("T")
WEB_FLAGS = ("--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
#: Jobs pushed to each queue: all different, so a count shown for the wrong queue fails.
PUSHED = {queue: n + 1 for n, queue in enumerate(QUEUES)}


def run_async(function: Callable[..., Awaitable[T]], *args: object) -> T:
    """``function(*args)`` on an event loop of its own thread (Playwright's sync API
    holds this thread's)."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(anyio.run, function, *args).result()


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def shown_owners(page: str) -> dict[str, tuple[str, bool]]:
    """Queue -> (owner shown, served here) in a group page's owners table."""
    table = page.split('id="owners"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(
        r'<tr data-queue="([^"]+)"[^>]*>.*?data-field="owner"[^>]*>([^<]*)<.*?'
        r'data-field="here">([^<]*)<',
        table,
        re.DOTALL,
    )
    return {queue: (owner.strip(), here == "yes") for queue, owner, here in rows}


def until(check: Callable[[], T | None], within: float, what: str) -> T:
    """``check()``'s first answer that is not None, polled until ``within`` seconds."""
    deadline = time.monotonic() + within
    while (found := check()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within}s")
        time.sleep(0.1)  # polling other processes' state
    return found


def scrape(metrics: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = fetch(metrics + "/metrics")
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_members_show_the_group_and_the_metrics_of_their_queues(
    tmp_path: Path, members: dict[str, ChildProcess], browser: Browser
) -> None:
    data = str(tmp_path / "group")
    urls = {}
    for name in ("m1", "m2", "m3"):
        urls[name] = http_urls(start(members, data, name, extra=WEB_FLAGS))
    bucket = run_async(balanced, data, [2, 2, 2], 30)
    with RemoteQueue(None, bytes, storage=data, group=QUEUES, timeout=5.0) as client:
        for queue, count in PUSHED.items():
            client.push_many([f"{queue}-{n}".encode() for n in range(count)], queue=queue)

    # Every member's group page names each queue's owner as the bucket does, and marks
    # the queues it serves itself.
    for name, (dashboard, _) in urls.items():

        def agrees(dashboard: str = dashboard, name: str = name) -> str | None:
            status, page = fetch(dashboard + "/group")
            assert status == 200, page
            shown = shown_owners(page)
            bucket_now = run_async(owners, data)
            expected = {q: (str(owner), owner == name) for q, owner in bucket_now.items()}
            return page if shown == expected else None

        page = until(agrees, 15, f"{name}'s group page agreeing with the bucket")
        for other in ("m1", "m2", "m3"):
            assert re.search(rf'data-member="{other}"[^>]*>.*?>live<', page, re.DOTALL), other
    assert run_async(owners, data) == bucket  # nothing moved meanwhile

    # Each member's metrics count the jobs of the queues it serves, and no others.
    for name, (dashboard, metrics) in urls.items():
        mine = sorted(queue for queue, owner in bucket.items() if owner == name)
        samples = scrape(metrics)
        assert samples[("osqueue_group_queues_served", ())] == len(mine)
        ready = {
            dict(labels)["queue"]: value
            for (metric, labels), value in samples.items()
            if metric == "osqueue_jobs" and dict(labels)["status"] == "ready"
        }
        assert ready == {queue: PUSHED[queue] for queue in mine}, name
        assert samples[("osqueue_broker_phase", (("phase", "running"),))] == len(mine)
        assert samples[("osqueue_broker_phase", (("phase", "standby"),))] == len(QUEUES) - 2
        for queue in mine:
            assert samples[("osqueue_epoch", (("queue", queue),))] >= 1

        # Its jobs page shows a queue it serves; one it does not names the owner.
        status, jobs = fetch(f"{dashboard}/jobs?queue={mine[0]}")
        assert status == 200, jobs
        assert jobs.count("<tr data-job=") == PUSHED[mine[0]]
        other = next(queue for queue, owner in bucket.items() if owner != name)
        status, refused = fetch(f"{dashboard}/jobs?queue={other}")
        assert status == 409, refused
        assert f"member &#39;{bucket[other]}&#39;" in refused  # quoted, HTML-escaped

    # The archive of any queue, whoever serves it: m1 shows that of a queue m2 serves.
    theirs = next(queue for queue, owner in bucket.items() if owner == "m2")
    with RemoteQueue(None, bytes, storage=data, group=QUEUES, timeout=5.0) as client:
        done = [client.claim(queues=[theirs]) for _ in range(PUSHED[theirs])]
        for job in done:
            assert job is not None
            client.complete(job)
    dashboard = urls["m1"][0]

    def archived() -> str | None:
        status, page = fetch(f"{dashboard}/archive?queue={theirs}")
        assert status == 200, page
        counts = [int(n) for n in re.findall(r'data-field="objects">(\d+)', page)]
        return page if sum(counts) >= 1 else None

    listing = until(archived, 15, f"{theirs}'s archive on m1's dashboard")
    assert f'<code id="archive-queue">{theirs}</code>' in listing
    [bucket_link] = re.findall(r'href="(/archive/bucket\?[^"]+)"', listing)[:1]
    assert f"queue={theirs}" in bucket_link
    status, objects = fetch(dashboard + bucket_link.replace("&amp;", "&"))
    assert status == 200, objects
    ids = {job.id for job in done if job is not None}
    assert ids <= set(re.findall(r'<tr data-job="([^"]+)"', objects))
    [job_link] = re.findall(r'href="(/job\?[^"]+archive=[^"]+)"', objects)[:1]
    status, shown = fetch(dashboard + job_link.replace("&amp;", "&"))
    assert status == 200, shown
    assert "completed" in shown
    status, unknown = fetch(f"{dashboard}/archive?queue=elsewhere")
    assert status == 404, unknown

    # And in a real browser: the same owners, and the screenshot.
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    open_page(page, urls["m1"][0] + "/group")
    for queue, owner in bucket.items():
        cell = page.locator(f'#owners tr[data-queue="{queue}"] [data-field="owner"]')
        assert cell.inner_text() == owner
    assert page.locator("#members tr[data-member]").count() == 3
    Shots(tmp_path).take(page, "group")
    open_page(page, urls["m1"][0] + "/")
    served = sorted(queue for queue, owner in bucket.items() if owner == "m1")
    rows = page.locator("#queues tbody tr[data-queue]")
    assert sorted(rows.nth(n).get_attribute("data-queue") or "" for n in range(rows.count())) == (
        served
    )
