"""The three example processes work as docs/distributed.md shows."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tests.io.conftest import wait_for_port
from tests.io.distributed.test_failover import free_port

from .conftest import ChildProcess


def example(role: str, *args: str, address: str, data: Path) -> ChildProcess:
    return ChildProcess(
        [sys.executable, "-m", "examples.distributed", role, *args],
        {"OSQUEUE_ADDRESS": address, "OSQUEUE_DATA": str(data)},
    )


def test_broker_publisher_and_consumer(tmp_path: Path) -> None:
    data = tmp_path / "queue"
    broker = example("broker", address="127.0.0.1:0", data=data)
    consumer: ChildProcess | None = None
    try:
        port = broker.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)", 20)[1]
        wait_for_port("127.0.0.1", int(port))
        address = f"127.0.0.1:{port}"

        publisher = example("publisher", "3", address=address, data=data)
        assert publisher.wait(20) == 0, publisher.text
        pushed = [m[1] for m in publisher.lines_matching(r"^pushed (\S+): task-\d$")]
        assert len(pushed) == 3

        consumer = example("consumer", address=address, data=data)
        completed = [
            consumer.wait_for_line(r"^completed (\S+): task-\d \(attempt 1\)$", 20)[1]
            for _ in pushed
        ]
        assert completed == pushed
        consumer.send_signal(signal.SIGINT)
        assert consumer.wait(10) == 0, consumer.text

        broker.send_signal(signal.SIGINT)
        assert broker.wait(10) == 0, broker.text
        assert "ownership released" in broker.text
    finally:
        for child in (broker, consumer):
            if child is not None:
                child.kill()


def test_a_broker_pair_and_a_client_that_finds_the_owner_in_the_bucket(tmp_path: Path) -> None:
    data = tmp_path / "queue"
    env = {"OSQUEUE_DATA": str(data)}

    def broker() -> ChildProcess:
        return ChildProcess([sys.executable, "-m", "examples.ha", "broker", str(free_port())], env)

    first = broker()
    second: ChildProcess | None = None
    try:
        first.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)", 20)
        second = ChildProcess(
            [sys.executable, "-m", "examples.ha", "broker", str(free_port())], env
        )
        second.wait_for_line("standing by", 20)

        def run_client() -> list[str]:
            client = ChildProcess([sys.executable, "-m", "examples.ha", "client", "3"], env)
            assert client.wait(60) == 0, client.text
            done = client.lines_matching(r"^completed \S+: task-\d at (\S+)$")
            assert len(done) == 3, client.text
            return [match[1] for match in done]

        served_by_first = set(run_client())
        first.send_signal(signal.SIGTERM)  # released: the standby takes over at once
        assert first.wait(20) == 0, first.text
        second.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)", 20)
        served_by_second = set(run_client())
        assert len(served_by_first) == len(served_by_second) == 1
        assert served_by_first != served_by_second
    finally:
        for child in (first, second):
            if child is not None:
                child.kill()


def test_two_group_members_split_the_queues_and_a_client_routes_by_queue(
    tmp_path: Path,
) -> None:
    env = {"OSQUEUE_DATA": str(tmp_path / "group")}

    def member() -> ChildProcess:
        return ChildProcess(
            [sys.executable, "-m", "examples.group", "member", str(free_port())], env
        )

    members = [member()]
    try:
        members[0].wait_for_line(r"queue search: serving it", 20)  # alone: all four
        members.append(member())
        members[0].wait_for_line(r"queue \S+: releasing it", 20)
        members[1].wait_for_line(r"queue \S+: serving it", 20)
        client = ChildProcess([sys.executable, "-m", "examples.group", "client", "8"], env)
        assert client.wait(60) == 0, client.text
        done = client.lines_matching(r"^processed (emails|video|reports|search)/\S+: task-\d$")
        assert len(done) == 8, client.text
        assert {match[1] for match in done} == {"emails", "video", "reports", "search"}
        assert client.lines_matching(r"^completed 8, served by \S+,\S+$"), client.text
        members[1].send_signal(signal.SIGTERM)  # its queues go back at once
        assert members[1].wait(20) == 0, members[1].text
    finally:
        for child in members:
            child.kill()
