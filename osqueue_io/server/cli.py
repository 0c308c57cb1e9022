"""``python -m osqueue_io.server``: the broker's command line.

The original Go broker's flags (``--listen``, ``--data``, ``--heartbeat-timeout``,
``--heartbeat-check``, ``--identity``) keep their names and meaning, and durations are
written the Go way (``30s``, ``500ms``, ``1m30s``) or as plain seconds (``2.5``). Sizes
are bytes, or a number with ``KiB``, ``MiB`` or ``GiB``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

import anyio

from osqueue_core import MAX_ID_LENGTH, BrokerConfig
from osqueue_io.address import split_host_port
from osqueue_io.server.admission import (
    DEFAULT_FULL_REQUESTS_IN_FLIGHT,
    DEFAULT_MAX_CONCURRENT_CALLS,
)
from osqueue_io.server.app import EXIT_USAGE, BrokerServer, request_size_limits
from osqueue_io.server.codec import default_max_message_bytes
from osqueue_io.storage import StorageConfigError, open_store

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_SIZE = re.compile(r"(\d+)\s*(KiB|MiB|GiB)?")
_SIZE_UNITS = {None: 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``1m30s``, ``500ms``) or a plain number."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        position, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        if position != len(text) or not text:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a duration: use e.g. 30s, 500ms, 1m30s or plain seconds"
            ) from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be positive and finite")
    return seconds


def parse_size(text: str) -> int:
    """Bytes in ``8388608``, ``64KiB``, ``8MiB`` or ``1GiB``; at least one."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a size: use bytes, or e.g. 64KiB, 8MiB, 1GiB"
        )
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if size < 1:
        raise argparse.ArgumentTypeError("the size must be at least one byte")
    return size


def parse_count(text: str) -> int:
    """A positive whole number."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a positive whole number")
    return count


def parse_name(text: str) -> str:
    """A non-empty name of at most ``MAX_ID_LENGTH`` characters (argparse names the
    flag; the value is not repeated, however long)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise argparse.ArgumentTypeError(
            f"is {len(text)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    return text


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` -> (host, port). An empty host (``:9090``) means every IPv4
    interface (``0.0.0.0``); IPv6 literals go in brackets (``[::1]:9090``)."""
    parsed = split_host_port(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not host:port: use e.g. :9090, 127.0.0.1:9090 or [::1]:9090"
        )
    host, port = parsed
    return host or "0.0.0.0", port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m osqueue_io.server",
        description=(
            "Run the osqueue broker: a gRPC server (osqueue.v1.QueueService) whose whole "
            "queue state is one JSON object in the storage named by --data. SIGINT or "
            "SIGTERM stops it gracefully (calls in flight get their replies, new ones "
            "UNAVAILABLE, ownership is released); a second signal stops it at once. "
            "Exit status: 0 after a clean stop, 1 if the broker failed (could not listen "
            "or take over, was replaced by another broker), 2 for a bad command line."
        ),
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=":9090",
        metavar="HOST:PORT",
        help="address to serve gRPC on; an empty host listens on every IPv4 interface, "
        "port 0 picks a free port (the chosen one is logged) (default: :9090)",
    )
    parser.add_argument(
        "--data",
        default="./data",
        metavar="URL",
        help="where the queue lives: a directory path, file:///dir, s3://bucket/prefix, "
        "gs://bucket/prefix, az://container/prefix or memory:// (credentials and "
        "endpoints from the usual environment variables, see docs/storage.md) "
        "(default: ./data)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=parse_duration,
        default="30s",
        metavar="DURATION",
        help="a claimed job whose worker sends no heartbeat for this long goes back to "
        "the queue (default: 30s)",
    )
    parser.add_argument(
        "--heartbeat-check",
        type=parse_duration,
        default="5s",
        metavar="DURATION",
        help="how often an idle broker confirms it still owns the queue (one version "
        "check of the state object, a HEAD), so a broker replaced by another one notices "
        "and exits. Expired leases need no polling: they are reclaimed exactly on time "
        "(default: 5s)",
    )
    parser.add_argument(
        "--identity",
        type=parse_name,
        default=None,
        metavar="NAME",
        help="this broker's name in the state object and in errors, at most "
        f"{MAX_ID_LENGTH} characters (default: host:pid)",
    )
    parser.add_argument(
        "--advertise",
        type=parse_name,
        default=None,
        metavar="HOST:PORT",
        help="address clients should use, published in the state object and in Stats, "
        f"at most {MAX_ID_LENGTH} characters (default: the --listen address, a wildcard "
        "host replaced by the host name)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=parse_duration,
        default="15s",
        metavar="DURATION",
        help="on SIGINT/SIGTERM, how long each step of the graceful stop may take "
        "(finishing storage writes, sending the last replies) (default: 15s)",
    )
    parser.add_argument(
        "--max-concurrent-calls",
        type=parse_count,
        default=DEFAULT_MAX_CONCURRENT_CALLS,
        metavar="N",
        help="calls served at once, waiting claims included; one more is refused at once "
        "with RESOURCE_EXHAUSTED (Overloaded: retry later) (default: %(default)s)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="largest request accepted; a larger one is refused from its length prefix, "
        "before it is read (RESOURCE_EXHAUSTED, PayloadTooLarge) (default: the largest "
        "PushBatch the batch limits allow, with framing and slack: "
        f"{default_max_message_bytes(BrokerConfig())} bytes)",
    )
    parser.add_argument(
        "--max-request-bytes-in-flight",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="request bytes held at once over all calls, at least --max-message-bytes; "
        "a request that does not fit is refused at once (RESOURCE_EXHAUSTED, Overloaded: "
        f"retry later) (default: {DEFAULT_FULL_REQUESTS_IN_FLIGHT} times "
        "--max-message-bytes)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=parse_duration,
        default="5s",
        metavar="DURATION",
        help="when storage has failed every state operation for this long, calls get "
        "UNAVAILABLE (StorageUnavailable, naming the storage error) instead of waiting "
        "while the broker keeps retrying; keep it below your clients' deadlines "
        "(default: 5s)",
    )
    parser.add_argument(
        "--recreate",
        action="store_true",
        help="start a new, empty queue even though the state object is missing while "
        "epoch markers or archive objects of an earlier queue exist (without it the "
        "broker refuses to start: StateMissing, exit 1); the new queue's epochs stay "
        "above every earlier one, so job ids never repeat",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="logging verbosity; logs go to stderr (default: INFO)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the broker as the command line says; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    host, port = args.listen
    try:
        config = BrokerConfig(
            heartbeat_timeout=args.heartbeat_timeout,
            stall_timeout=args.stall_timeout,
            recreate=args.recreate,
        )
        max_message_bytes, max_request_bytes_in_flight = request_size_limits(
            config, args.max_message_bytes, args.max_request_bytes_in_flight
        )
        store = open_store(args.data)
    except (ValueError, StorageConfigError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    server = BrokerServer(
        store,
        config,
        host=host,
        port=port,
        identity=args.identity,
        advertise=args.advertise,
        ownership_check=args.heartbeat_check,
        drain_timeout=args.drain_timeout,
        max_concurrent_calls=args.max_concurrent_calls,
        max_message_bytes=max_message_bytes,
        max_request_bytes_in_flight=max_request_bytes_in_flight,
    )

    async def run() -> int:
        try:
            return await server.run()
        finally:
            await store.aclose()

    # grpclib needs asyncio.
    return anyio.run(run, backend="asyncio")


def exit_process(code: int) -> NoReturn:
    """End the process with ``code`` once :func:`main` has returned, skipping the
    interpreter's finalization.

    obstore runs its I/O on Tokio worker threads (through pyo3-async-runtimes) that
    are never shut down; if one of them is still winding down an HTTP connection while
    Python finalizes, it panics and the process aborts (SIGABRT) *after* a clean stop.
    Seen here in about one exit in three against S3; upstream:
    https://github.com/PyO3/pyo3-async-runtimes/issues/40. By the time ``main``
    returns, every call was answered, the state released and the store closed: only
    the buffered output is left to flush.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken pipe: nothing more can be written anyway.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
