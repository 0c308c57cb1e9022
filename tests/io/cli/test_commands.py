"""Every ``osqueue`` command, run as the installed console script against a real broker
process and real storage: a local directory and moto's S3 server (one broker each for
the module). ``--json`` is parsed on both; tables, which do not depend on the storage,
are checked for what a person reads on the local directory only (each run of the command
costs a Python start)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from osqueue_core import untouched_positions
from osqueue_io.sync import RemoteQueue
from tests.io.cli.conftest import Queue, osqueue, populate, wait_until
from tests.io.conftest import S3Server, fresh_prefix

ESC = "\x1b"


@pytest.fixture(scope="module", params=["local", "s3"])
def queue(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Queue]:
    if request.param == "local":
        filled = populate("local", str(tmp_path_factory.mktemp("cli") / "queue"), {}, {})
    else:
        s3: S3Server = request.getfixturevalue("moto_s3")
        filled = populate("s3", s3.url(fresh_prefix()), s3.env, s3.options)
    yield filled
    filled.broker.kill()


def _line(stats: dict[str, object], queue: str) -> dict[str, object]:
    lines = [line for line in stats["queues"] if line["queue"] == queue]  # type: ignore[attr-defined]
    assert len(lines) == 1, stats
    return lines[0]  # type: ignore[no-any-return]


def test_stats(queue: Queue) -> None:
    stats = queue.run("stats", "--json").json()
    state = queue.state()
    assert stats["owner"]["epoch"] == state.header.owner.epoch
    assert stats["owner"]["address"] == queue.broker.address
    assert stats["owner"]["released"] is False
    assert stats["revision"] >= 1
    assert stats["schema_version"] == 4
    # Segments stage 2 spills delayed jobs too, into segments of their own: count what
    # the state references.
    refs = state.segments
    untouched = sum(len(untouched_positions(ref)) for ref in refs)
    assert stats["segments"] == len(refs) >= 1
    assert stats["untouched"] == untouched >= 6
    default = _line(stats, "default")
    assert (default["ready"], default["untouched"], default["claimed"]) == (6, 6, 0)
    assert default["oldest_ready_age"] is not None
    assert default["oldest_ready_age"] >= 0
    mail = _line(stats, "mail")
    assert (mail["ready"], mail["delayed"], mail["claimed"], mail["dead"]) == (0, 1, 1, 1)
    assert not any(line["queue"] == "reports" for line in stats["queues"])

    if queue.kind != "local":
        return  # tables do not depend on the storage
    table = queue.run("stats")
    assert table.code == 0, table.stderr
    assert queue.broker.address in table.stdout
    assert f"{len(refs)} ({untouched} untouched jobs)" in table.stdout
    rows = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines() if line.strip()}
    assert rows["default"][:6] == ["6", "0", "0", "0", "0", "6"]
    assert rows["mail"][:4] == ["0", "1", "1", "1"]


def test_jobs_ls(queue: Queue) -> None:
    listed = queue.run("jobs", "ls", "--json").json()
    assert listed["more"] is False
    by_id = {job["id"]: job for job in listed["jobs"]}
    assert set(queue.plain) <= set(by_id)
    assert {by_id[i]["where"] for i in queue.plain} == {"segment"}
    (segment,) = {by_id[i]["segment"] for i in queue.plain}
    assert segment.startswith("segments/")
    assert queue.completed not in by_id  # completed and archived: not in the state
    shown = {
        i: (by_id[i]["status"], by_id[i]["delayed"])
        for i in (queue.claimed, queue.dead, queue.delayed)
    }
    assert shown == {
        queue.claimed: ("claimed", False),
        queue.dead: ("dead", False),
        queue.delayed: ("ready", True),
    }

    delayed = queue.run("jobs", "ls", "--queue", "mail", "--status", "delayed", "--json").json()
    assert [job["id"] for job in delayed["jobs"]] == [queue.delayed]
    limited = queue.run("jobs", "ls", "--queue", "default", "--limit", "2", "--json").json()
    assert limited["more"] is True
    assert [job["id"] for job in limited["jobs"]] == [
        job["id"] for job in listed["jobs"] if job["queue"] == "default"
    ][:2]

    if queue.kind != "local":
        return  # tables do not depend on the storage
    table = queue.run("jobs", "ls", "--queue", "mail", "--limit", "2")
    assert table.code == 0, table.stderr
    statuses = {line.split()[0]: line.split()[2] for line in table.stdout.splitlines()[1:3]}
    assert statuses == {queue.claimed: "claimed", queue.dead: "dead"}  # push order
    assert "more: raise --limit" in table.stdout
    assert ESC not in table.stdout


def test_jobs_show(queue: Queue) -> None:
    in_segment = queue.run("jobs", "show", queue.plain[0], "--json").json()
    assert (in_segment["where"], in_segment["status"]) == ("segment", "ready")
    assert base64.b64decode(in_segment["data"]) == b"plain-0"
    assert in_segment["payload_bytes"] == len(b"plain-0")

    claimed = queue.run("jobs", "show", queue.claimed, "--json").json()
    assert (claimed["where"], claimed["status"], claimed["queue"]) == ("inline", "claimed", "mail")
    assert claimed["claimed_by"]
    assert claimed["priority"] == 5

    gone = queue.run("jobs", "show", queue.completed)
    assert gone.code == 3
    assert "add --archive" in gone.error_line()
    archived = queue.run("jobs", "show", queue.completed, "--archive", "--json").json()
    assert (archived["where"], archived["status"]) == ("archive", "completed")
    assert base64.b64decode(archived["result"]) == b"the result"
    assert archived["archive_key"].startswith("archive/")

    unknown = queue.run("jobs", "show", "000000099999-1", "--archive", "--since", "2h")
    assert unknown.code == 3
    assert "not in the state, nor in the archive" in unknown.error_line()

    if queue.kind != "local":
        return  # tables do not depend on the storage
    table = queue.run("jobs", "show", queue.plain[1])
    assert table.code == 0
    fields = dict(
        line.split(None, 1) for line in table.stdout.splitlines()[1:] if len(line.split()) > 1
    )
    assert fields["where"].strip() == "segment"
    assert fields["data"].strip() == base64.b64encode(b"plain-1").decode()


def test_dead_ls(queue: Queue) -> None:
    dead = queue.run("dead", "ls", "--queue", "mail", "--json").json()
    assert [job["id"] for job in dead["jobs"]] == [queue.dead]
    assert dead["jobs"][0]["last_error"] == "ValueError: \x1b[31mred\nsecond line"
    if queue.kind != "local":
        return  # tables do not depend on the storage
    table = queue.run("dead", "ls", "--queue", "mail")
    assert table.code == 0
    assert queue.dead in table.stdout
    # A worker's error text reaches the terminal escaped, never as control characters.
    assert ESC not in table.stdout
    assert "\\x1b[31mred\\nsecond line" in table.stdout


def test_archive_ls_and_cat(queue: Queue) -> None:
    listed = queue.run("archive", "ls", "--json").json()
    assert listed["objects"] >= 1
    assert all(bucket["bucket"].count("T") == 1 for bucket in listed["buckets"])
    ranged = queue.run("archive", "ls", "--since", "2h", "--json").json()
    assert ranged["buckets"] == listed["buckets"]

    records = queue.run("archive", "cat", "--since", "2h").lines()
    done = [record for record in records if record["id"] == queue.completed]
    assert len(done) == 1
    assert done[0]["status"] == "completed"
    assert base64.b64decode(done[0]["result"]) == b"the result"
    filtered = queue.run(
        "archive", "cat", "--since", "2h", "--queue", "reports", "--status", "completed"
    )
    assert [record["id"] for record in filtered.lines()] == [queue.completed]
    # The range is the time jobs finished: one that ended in the last hour is not older.
    assert queue.run("archive", "cat", "--since", "3h", "--until", "2h").lines() == []

    if queue.kind != "local":
        return  # tables do not depend on the storage
    table = queue.run("archive", "ls")
    assert table.code == 0
    assert listed["buckets"][0]["bucket"] in table.stdout
    buckets, objects = len(listed["buckets"]), listed["objects"]
    footer = f"{buckets} bucket{'s' * (buckets != 1)}, {objects} object{'s' * (objects != 1)}"
    assert footer in table.stdout


def test_cancel(queue: Queue) -> None:
    with RemoteQueue(queue.broker.address, bytes) as client:
        waiting = client.push(b"cancel me", queue="ops")
        running = client.push(b"cancel me later", queue="ops-held")
        job = client.claim(queues=["ops-held"])
        assert job is not None
        assert job.id == running

    at_once = osqueue("cancel", waiting, "--broker", queue.broker.address, "--json")
    assert at_once.json() == {"job_id": waiting, "at_once": True}
    # Without --broker, the owner is found through the storage.
    marked = queue.run("cancel", running)
    assert marked.code == 0, marked.stderr
    assert "cancel requested" in marked.stdout
    shown = queue.run("jobs", "show", running, "--json").json()
    assert shown["cancel_requested"] is True
    again = queue.run("cancel", waiting)
    assert again.code == 3
    again.error_line()


def test_dead_redrive_and_purge(queue: Queue) -> None:
    with RemoteQueue(queue.broker.address, bytes) as client:
        ids = [client.push(b"dies %d" % n, queue="ops-dead", max_attempts=1) for n in range(3)]
        for _ in ids:
            job = client.claim(queues=["ops-dead"])
            assert job is not None
            client.fail(job, "boom")

    redriven = osqueue("dead", "redrive", ids[0], "--broker", queue.broker.address, "--json").json()
    assert redriven == {"redriven": [ids[0]]}
    assert queue.run("jobs", "show", ids[0], "--json").json()["status"] == "ready"

    refused = queue.run("dead", "redrive", ids[0])  # ready now: not a dead letter
    assert refused.code == 3
    refused.error_line()

    purged = queue.run("dead", "purge", "--queue", "ops-dead")
    assert purged.code == 0, purged.stderr
    assert purged.stdout.startswith("purged 2 dead letters")
    assert set(purged.stdout.split()[4:]) == set(ids[1:])
    assert queue.run("dead", "ls", "--queue", "ops-dead", "--json").json()["jobs"] == []

    wait_until(lambda: not any(job.leaving for job in queue.state().jobs), "the purge archived")
    found = queue.run("archive", "cat", "--since", "1h", "--queue", "ops-dead").lines()
    assert sorted(record["id"] for record in found) == sorted(ids[1:])
    assert {record["status"] for record in found} == {"dead"}

    both = queue.run("dead", "redrive", ids[1], "--queue", "ops-dead")
    assert both.code == 2
    assert "not both" in both.error_line()
