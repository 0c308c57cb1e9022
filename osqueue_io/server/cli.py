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

from osqueue_core import (
    MAX_ATTEMPTS,
    MAX_ID_LENGTH,
    BrokerConfig,
    InvalidArgument,
    RetryPolicy,
    check_queue_name,
)
from osqueue_io import eventloop, logs
from osqueue_io.address import split_host_port
from osqueue_io.group.layout import MAX_GROUP_QUEUES, parse_group
from osqueue_io.security.flags import add_server_flags, server_security
from osqueue_io.security.http import route_role, token_middleware
from osqueue_io.server.admission import (
    DEFAULT_FULL_REQUESTS_IN_FLIGHT,
    DEFAULT_MAX_CONCURRENT_CALLS,
)
from osqueue_io.server.app import EXIT_USAGE, BrokerServer, ServerOptions, request_size_limits
from osqueue_io.server.codec import default_max_message_bytes
from osqueue_io.storage import StorageConfigError, open_store

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_SIZE = re.compile(r"(\d+)\s*(KiB|MiB|GiB)?")
_SIZE_UNITS = {None: 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``1m30s``, ``500ms``) or a plain number."""
    seconds = _duration(text)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be positive and finite")
    return seconds


def parse_backoff(text: str) -> float:
    """Like :func:`parse_duration`, but 0 is allowed (a retry at once)."""
    return _duration(text)


def _duration(text: str) -> float:
    """A finite, non-negative number of seconds (see :func:`parse_duration`)."""
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
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be finite and not negative")
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


def parse_zero_or_count(text: str, highest: int, zero_means: str) -> int | None:
    """A whole number from 0 to ``highest``; 0 (which means ``zero_means``) is None."""
    try:
        count = int(text)
    except ValueError:
        count = -1
    if not 0 <= count <= highest:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a whole number from 0 ({zero_means}) to {highest}"
        )
    return count or None


def parse_max_attempts(text: str) -> int | None:
    """Claims a job gets before it is dead: ``0`` for unlimited (None)."""
    return parse_zero_or_count(text, MAX_ATTEMPTS, "unlimited")


#: The most jobs a spill threshold may name (a segment holds what one spill takes).
MAX_SPILL_JOBS = 1_000_000


def parse_spill_jobs(text: str) -> int | None:
    """Inline ready jobs that start a spill into a segment: ``0`` never spills (None)."""
    return parse_zero_or_count(text, MAX_SPILL_JOBS, "never spill")


def parse_queue_retry(text: str) -> tuple[str, RetryPolicy]:
    """``NAME=BASE,CAP,MAX``: queue ``NAME`` retries after ``BASE`` doubling up to
    ``CAP`` (durations), at most ``MAX`` attempts (0: unlimited)."""
    name, equals, policy = text.partition("=")
    parts = policy.split(",")
    if not equals or len(parts) != 3:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not NAME=BASE,CAP,MAX: use e.g. emails=1s,5m,10"
        )
    try:
        check_queue_name(name)
    except InvalidArgument as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    base, cap, attempts = parse_backoff(parts[0]), parse_backoff(parts[1]), parts[2]
    try:
        return name, RetryPolicy(base, cap, parse_max_attempts(attempts))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"queue {name!r}: {error}") from None


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


def _group(text: str) -> tuple[str, ...]:
    try:
        return parse_group(text)
    except InvalidArgument as error:
        raise argparse.ArgumentTypeError(str(error)) from None


#: The command as usage and errors name it (``osqueue server`` passes its own).
PROG = "python -m osqueue_io.server"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
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
        "--metrics-listen",
        type=parse_listen,
        default=None,
        metavar="HOST:PORT",
        help="also serve Prometheus metrics (GET /metrics, text format) on this address; "
        "the metrics are listed in docs/operations.md (default: off)",
    )
    parser.add_argument(
        "--http-listen",
        type=parse_listen,
        default=None,
        metavar="HOST:PORT",
        help="also serve the web dashboard (queues, jobs, dead letters with redrive and "
        "purge, the archive, the broker) and /metrics on this address; with tokens, pages "
        "and metrics need a read token and the buttons an admin one; without, listen on "
        "a trusted interface (default: off)",
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
        help="a claimed job whose worker sends no heartbeat for this long loses its "
        "lease: the attempt counts as failed (retried after the backoff, or dead when out "
        "of attempts) (default: 30s)",
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
    default_retry = RetryPolicy()
    parser.add_argument(
        "--retry-base",
        type=parse_backoff,
        default=default_retry.base,
        metavar="DURATION",
        help="a failed job (or one whose lease ran out) runs again after this long, "
        "doubling with each attempt up to --retry-cap, each delay scaled by a jitter "
        "between 0.5 and 1 fixed by the job id and attempt; 0 retries at once "
        f"(default: {default_retry.base:g}s)",
    )
    parser.add_argument(
        "--retry-cap",
        type=parse_backoff,
        default=default_retry.cap,
        metavar="DURATION",
        help="the longest retry delay, before jitter; at least --retry-base "
        f"(default: {default_retry.cap:g}s)",
    )
    parser.add_argument(
        "--max-attempts",
        type=parse_max_attempts,
        default=default_retry.max_attempts,
        metavar="N",
        help="claims a job gets before it is dead (a dead letter), unless pushed with "
        "its own limit; an expired lease counts as one; 0 for unlimited "
        f"(default: {default_retry.max_attempts})",
    )
    parser.add_argument(
        "--spill-jobs",
        type=parse_spill_jobs,
        default=BrokerConfig().spill_jobs,
        metavar="N",
        help="once this many ready jobs wait in the state object, they move out into an "
        "immutable segment object, so a commit's size follows the work in flight, not the "
        "backlog (docs/architecture.md, Segments); 0 never spills "
        f"(default: {BrokerConfig().spill_jobs})",
    )
    parser.add_argument(
        "--owner-lease",
        type=parse_backoff,
        default="15s",
        metavar="DURATION",
        help="high availability (docs/high-availability.md): the owner promises to change "
        "the state object at least this often, writing an empty renewal every third of it "
        "when idle, so a standby can tell it is alive; between 1s and 1h, or 0 for no "
        "renewals (an idle broker then writes nothing, and a standby takes it over after "
        "its own lease of quiet) (default: 15s)",
    )
    parser.add_argument(
        "--standby",
        action="store_true",
        help="start as a standby: listen, but answer health checks NOT_SERVING and queue "
        "calls NotOwner (naming the owner), watch the owner, and "
        "take over once its lease lapsed (no new state version for the lease, by this "
        "machine's clock), it stopped cleanly, or there is no state; replaced later, stand "
        "by again instead of exiting. Without it a broker displaces the owner at once",
    )
    parser.add_argument(
        "--standby-poll",
        type=parse_duration,
        default="1s",
        metavar="DURATION",
        help="how often a standby checks the state's version (a HEAD), at most half the "
        "lease (default: 1s)",
    )
    parser.add_argument(
        "--group",
        type=_group,
        default=None,
        metavar="QUEUE,QUEUE,...",
        help="scale-out (docs/high-availability.md): run as one member of a group of "
        "brokers sharing --data, which split these queues between them, each queue in its "
        "own state object under queues/<name>/, each owned by one live member, balanced "
        "by count; start every member with the same list (at most "
        f"{MAX_GROUP_QUEUES} queues). Needs --owner-lease; --standby is implied",
    )
    parser.add_argument(
        "--queue-retry",
        type=parse_queue_retry,
        action="append",
        default=[],
        metavar="NAME=BASE,CAP,MAX",
        help="the retry policy of one queue, instead of the three flags above: base and "
        "cap durations, and the attempt limit (0: unlimited); repeat for more queues, "
        "e.g. --queue-retry emails=1s,5m,10",
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
        help="logging verbosity; logs go to stderr (default: INFO); every commit is "
        "logged at DEBUG",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default="text",
        help="text lines, or one JSON object a line with time, level, logger, message and "
        "the queue, epoch and revision where they apply (default: text)",
    )
    parser.add_argument(
        "--event-loop",
        choices=eventloop.CHOICES,
        default=None,
        help="the asyncio event loop the broker runs on: asyncio's own, uvloop (pip "
        "install 'osqueue[fast]'), or auto (uvloop when installed) "
        f"(default: ${eventloop.ENV_VAR}, else asyncio)",
    )
    add_server_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the broker as the command line says; returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logs.configure_logging(args.log_level, args.log_format)
    host, port = args.listen
    try:
        queue_retry = dict(args.queue_retry)
        if len(queue_retry) < len(args.queue_retry):
            raise ValueError("--queue-retry names a queue more than once")
        config = BrokerConfig(
            heartbeat_timeout=args.heartbeat_timeout,
            stall_timeout=args.stall_timeout,
            recreate=args.recreate,
            retry=RetryPolicy(args.retry_base, args.retry_cap, args.max_attempts),
            queue_retry=queue_retry,
            spill_jobs=args.spill_jobs,
            owner_lease=args.owner_lease or None,
            standby=args.standby,
            standby_poll=args.standby_poll,
        )
        max_message_bytes, max_request_bytes_in_flight = request_size_limits(
            config, args.max_message_bytes, args.max_request_bytes_in_flight
        )
        if args.group is not None and config.owner_lease is None:
            raise ValueError("--group needs an --owner-lease (members judge each other by it)")
        loop = eventloop.resolve(args.event_loop)
        security = server_security(args)
        store = open_store(args.data)
    except (ValueError, StorageConfigError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    for warning in security.warnings:
        logging.getLogger("osqueue.security").warning("%s", warning)
    options: ServerOptions = {
        "host": host,
        "port": port,
        "identity": args.identity,
        "advertise": args.advertise,
        "ownership_check": args.heartbeat_check,
        "drain_timeout": args.drain_timeout,
        "max_concurrent_calls": args.max_concurrent_calls,
        "max_message_bytes": max_message_bytes,
        "max_request_bytes_in_flight": max_request_bytes_in_flight,
        "ssl_context": security.ssl_context,
        "tokens": security.tokens,
        "metrics_listen": args.metrics_listen,
        "http_listen": args.http_listen,
        # The same certificate and tokens guard the dashboard and the metrics.
        "http_ssl_context": security.http_ssl_context,
        "http_middlewares": (
            (token_middleware(security.tokens, route_role),) if security.tokens.enabled else ()
        ),
    }
    # Imported here: the group's server is built on this package's (a cycle at import).
    from osqueue_io.group.server import GroupServer

    server: BrokerServer | GroupServer = (
        BrokerServer(store, config, **options)
        if args.group is None
        else GroupServer(store, args.group, config, **options)
    )

    async def run() -> int:
        try:
            return await server.run()
        finally:
            await store.aclose()

    # grpclib needs asyncio (or uvloop, its drop-in).
    logging.getLogger("osqueue.server").info("event loop: %s", loop)
    return eventloop.run(run, loop)


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
