"""Structured logs: the JSON formatter, and what a broker process logs at which level."""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import orjson
import pytest

from osqueue_io.logs import JsonFormatter, configure_logging
from osqueue_io.remote import Worker
from tests.io.distributed.conftest import BrokerProcess, Storage

pytestmark = pytest.mark.anyio


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("osqueue.test", logging.WARNING, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_json_line_has_the_fields_that_apply() -> None:
    line = orjson.loads(
        JsonFormatter().format(
            record("job %s died", "j1", queue="mail", epoch=3, revision=41, unrelated="x")
        )
    )
    assert line.pop("time").endswith("Z")
    assert line == {
        "level": "WARNING",
        "logger": "osqueue.test",
        "message": "job j1 died",
        "queue": "mail",
        "epoch": 3,
        "revision": 41,
    }


def test_a_json_line_carries_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    line = orjson.loads(JsonFormatter().format(made))
    assert "ValueError: boom" in line["exception"]


def test_configure_logging_writes_json_lines() -> None:
    stream = io.StringIO()
    try:
        configure_logging("INFO", "json", stream)
        logging.getLogger("osqueue.test").info("hello %s", "there", extra={"epoch": 1})
        logging.getLogger("osqueue.test").debug("not at INFO")
    finally:
        configure_logging("WARNING", "text")
    [line] = [orjson.loads(text) for text in stream.getvalue().splitlines()]
    assert (line["message"], line["epoch"], line["level"]) == ("hello there", 1, "INFO")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml")


def lines_of(broker: BrokerProcess) -> list[dict[str, Any]]:
    broker.collect()
    parsed = []
    for text in broker.output:
        line = orjson.loads(text)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= set(line), line
        parsed.append(line)
    return parsed


def first(lines: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    found = [line for line in lines if test(line)]
    assert found, "no such line"
    return found[0]


async def test_a_broker_logs_json_with_queue_epoch_and_revision(
    local_storage: Storage, start_broker: Callable[..., BrokerProcess]
) -> None:
    broker = start_broker(
        local_storage.data,
        "--log-format",
        "json",
        "--log-level",
        "DEBUG",
        "--heartbeat-timeout",
        "1s",
        "--max-attempts",
        "1",
        "--owner-lease",
        "0",
    )
    async with Worker(broker.address, worker_id="sleepy", timeout=5) as worker:
        job_id = await worker.push(b"never finished", queue="mail")
        job = await worker.claim(queues=["mail"])
        assert job is not None
        # No heartbeat: the lease runs out after 1 s; the job is out of attempts.
        deadline = time.monotonic() + 15
        while (await worker.get(job_id)).status != "dead":
            assert time.monotonic() < deadline, "the lease never expired"
            await anyio.sleep(0.1)  # polling for a lease that runs out on the broker's clock
    assert broker.terminate() == 0
    lines = lines_of(broker)
    took_over = first(lines, lambda line: line["message"].startswith("took over the queue"))
    assert (took_over["level"], took_over["epoch"], took_over["revision"]) == ("INFO", 1, 1)
    commits = [line for line in lines if line["message"].startswith("committed revision")]
    assert commits, "every commit is logged at DEBUG"
    assert all(line["level"] == "DEBUG" and line["epoch"] == 1 for line in commits)
    revisions = [line["revision"] for line in commits]
    assert revisions == sorted(set(revisions)), "each revision once, in order"
    expired = first(lines, lambda line: "expired" in line["message"])
    dead = first(lines, lambda line: "dead letter" in line["message"])
    for line in (expired, dead):
        assert line["level"] == "WARNING"
        assert (line["queue"], line["job_id"], line["epoch"]) == ("mail", job_id, 1)
        assert line["revision"] in revisions, "noticed once its write landed"
    assert expired["worker_id"] == "sleepy"
    released = first(lines, lambda line: line["message"].startswith("released the queue"))
    assert released["revision"] > max(revisions), "the last write of the stop"


async def test_commits_are_not_logged_at_info(
    local_storage: Storage, start_broker: Callable[..., BrokerProcess]
) -> None:
    broker = start_broker(local_storage.data, "--log-format", "json", "--owner-lease", "0")
    async with Worker(broker.address, timeout=5) as worker:
        await worker.push(b"x")
    assert broker.terminate() == 0
    lines = lines_of(broker)
    assert not [line for line in lines if line["level"] == "DEBUG"]
    assert first(lines, lambda line: "listening on" in line["message"])["epoch"] == 1
