"""``python -m osqueue_io.server``: its flags, and refusing bad ones before touching storage."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from osqueue_core import MAX_ID_LENGTH, BrokerConfig, RetryPolicy
from osqueue_io.server.cli import (
    build_parser,
    parse_backoff,
    parse_duration,
    parse_listen,
    parse_max_attempts,
    parse_queue_retry,
    parse_size,
)
from osqueue_io.server.codec import default_max_message_bytes

from .conftest import REPO_ROOT, BrokerProcess

FLAGS = [
    "--listen",
    "--metrics-listen",
    "--http-listen",
    "--data",
    "--heartbeat-timeout",
    "--heartbeat-check",
    "--identity",
    "--advertise",
    "--drain-timeout",
    "--max-concurrent-calls",
    "--max-message-bytes",
    "--max-request-bytes-in-flight",
    "--stall-timeout",
    "--retry-base",
    "--retry-cap",
    "--max-attempts",
    "--spill-jobs",
    "--owner-lease",
    "--standby",
    "--standby-poll",
    "--group",
    "--queue-retry",
    "--recreate",
    "--log-level",
    "--log-format",
    "--event-loop",
    "--tls-cert",
    "--tls-key",
    "--token-file",
    "--token",
]


def server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osqueue_io.server", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_help_documents_every_flag() -> None:
    done = server("--help")
    assert done.returncode == 0
    for flag in FLAGS:
        assert f"{flag} " in done.stdout, flag
    # ... and the parser has no flag the list misses.
    documented = {o for a in build_parser()._actions for o in a.option_strings}
    assert documented == {"-h", "--help", *FLAGS}


def test_help_and_docs_show_the_intake_limits() -> None:
    text = " ".join(server("--help").stdout.split())
    limit = default_max_message_bytes(BrokerConfig())
    assert "(default: 1000)" in text
    assert f"{limit} bytes" in text
    assert "(default: 4 times --max-message-bytes)" in text
    docs = (REPO_ROOT / "docs" / "protocol.md").read_text()
    assert f"| `--max-message-bytes` | `{limit}`" in docs
    assert f"default {limit:,} bytes" in docs
    assert f"({4 * limit:,} bytes)" in docs


def test_a_bad_flag_is_a_usage_error(tmp_path: Path) -> None:
    done = server("--heartbeat-timeout", "soon", "--data", str(tmp_path))
    assert done.returncode == 2
    assert "not a duration" in done.stderr


@pytest.mark.parametrize("flag", ["--identity", "--advertise"])
def test_an_over_long_name_is_a_usage_error_that_does_not_echo_it(
    flag: str, tmp_path: Path
) -> None:
    value = "n" * (MAX_ID_LENGTH + 1)
    done = server(flag, value, "--data", str(tmp_path / "q"))
    assert done.returncode == 2
    assert f"argument {flag}: is {MAX_ID_LENGTH + 1} characters long" in done.stderr
    assert f"the limit is {MAX_ID_LENGTH}" in done.stderr
    assert value not in done.stderr
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-concurrent-calls", "0"], "is not a positive whole number"),
        (["--max-message-bytes", "8 MB"], "is not a size"),
        (["--identity", ""], "argument --identity: must not be empty"),
        (
            ["--max-message-bytes", "2MiB", "--max-request-bytes-in-flight", "1MiB"],
            "must be at least the message size limit (2097152)",
        ),
        (["--retry-base", "2s", "--retry-cap", "1s"], "cap must be at least its base"),
        (["--retry-base=-1s"], "not a duration"),
        (["--max-attempts=-1"], "is not a whole number from 0 (unlimited) to 10000"),
        (
            ["--queue-retry", "a=1s,2s,3", "--queue-retry", "a=1s,2s,4"],
            "--queue-retry names a queue more than once",
        ),
        (["--queue-retry", "has space=1s,2s,3"], "has characters outside"),
        (["--group", "a,b,a"], "argument --group: a group names a queue more than once"),
        (["--group", "a,b/c"], "has characters outside"),
        (["--group", ",".join(f"q{n}" for n in range(1001))], "a group has 1 to 1000 queues"),
        (["--group", "a,b", "--owner-lease", "0"], "--group needs an --owner-lease"),
    ],
)
def test_bad_limits_are_usage_errors(flags: list[str], message: str, tmp_path: Path) -> None:
    done = server(*flags, "--data", str(tmp_path / "q"))
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(
    ("text", "size"),
    [("1", 1), ("65536", 65536), ("64KiB", 65536), ("8MiB", 8 << 20), ("1GiB", 1 << 30)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "0MiB", "-1", "1.5MiB", "8MB", "MiB", "1 KB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_a_taken_port_fails_before_the_queue_is_touched(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = server("--listen", f"127.0.0.1:{port}", "--data", str(tmp_path / "q"))
    assert done.returncode == 1
    assert "cannot listen" in done.stderr
    assert not (tmp_path / "q" / "state.json").exists()


def test_a_missing_state_with_history_is_refused_unless_recreate(
    tmp_path: Path, start_broker: Callable[..., BrokerProcess]
) -> None:
    """Before: a deleted state.json silently started a new, empty queue at epoch 1 next to
    the old queue's archive (and its job ids)."""
    data = tmp_path / "q"
    first = start_broker(str(data))
    assert first.terminate() == 0
    (data / "state.json").unlink()
    done = server("--listen", "127.0.0.1:0", "--data", str(data))
    assert done.returncode == 1
    assert "is missing, but this queue has history" in done.stderr
    assert "--recreate" in done.stderr
    assert not (data / "state.json").exists(), "nothing was written"
    second = start_broker(str(data), "--recreate")
    assert second.terminate() == 0
    assert '"epoch":2' in (data / "state.json").read_text(errors="replace")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("500ms", 0.5), ("1m30s", 90), ("1.5h", 5400), ("2", 2), ("0.25", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10 s", "1x", "-1s", "0", "0s", "inf", "5s3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("emails=1s,5m,10", ("emails", RetryPolicy(1.0, 300.0, 10))),
        ("reports.v2=0,0,0", ("reports.v2", RetryPolicy(0.0, 0.0, None))),
        ("q=250ms,2s,1", ("q", RetryPolicy(0.25, 2.0, 1))),
    ],
)
def test_queue_retry_policies(text: str, expected: tuple[str, RetryPolicy]) -> None:
    assert parse_queue_retry(text) == expected


@pytest.mark.parametrize(
    "text",
    ["emails", "emails=1s,5m", "=1s,5m,1", "q=5m,1s,3", "q=1s,5m,-1", "q=1s,5m,10001", "q=a,b,c"],
)
def test_bad_queue_retry_policies(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_queue_retry(text)


def test_attempt_limits_and_backoffs() -> None:
    assert parse_max_attempts("0") is None  # unlimited
    assert parse_max_attempts("7") == 7
    assert parse_backoff("0") == 0.0  # a retry at once
    assert parse_backoff("1m") == 60.0


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (":9090", ("0.0.0.0", 9090)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("broker.local:80", ("broker.local", 80)),
        ("[::1]:9090", ("::1", 9090)),
    ],
)
def test_listen_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_listen(text) == address


@pytest.mark.parametrize("text", ["9090", "host", "host:", "host:99999", "::1:9090"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_listen(text)
