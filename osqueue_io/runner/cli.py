"""``python -m osqueue_io.worker``: the worker runner's command line.

``python -m osqueue_io.worker tasks:handle --data ./queue-data --concurrency 4`` imports
``handle`` from ``tasks`` (the current directory is on the import path) and runs
:func:`~osqueue_io.runner.run_worker` with it, against an embedded broker on the
storage ``--data`` names, or against a gRPC broker (``--broker HOST:PORT``). Items are
raw bytes here: the handler gets a ``ClaimedJob[bytes]`` and decodes ``job.item``
itself (``json.loads(job.item)`` for JSON payloads).

SIGTERM or SIGINT stops the worker gracefully; a second one skips the grace period.
Exit status: 0 after a stop, 1 if the worker failed (storage or broker unusable), 2 for
a bad command line (one line saying what is wrong).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import cast

import anyio
import attrs
from anyio.abc import TaskStatus

from osqueue_core import (
    DEFAULT_QUEUE,
    MAX_CLAIM_COUNT,
    MAX_CLAIM_WAIT,
    MAX_ID_LENGTH,
    MAX_QUEUES_PER_CLAIM,
    InvalidArgument,
    OsqueueError,
    check_queue_name,
)
from osqueue_io import eventloop, logs
from osqueue_io.address import split_host_port
from osqueue_io.client import JobQueue
from osqueue_io.embedded import EmbeddedQueue
from osqueue_io.remote import RemoteQueue
from osqueue_io.runner.handler import Handler
from osqueue_io.runner.run import MAX_GRACE, run_worker
from osqueue_io.security.flags import add_client_flags, client_security
from osqueue_io.server.cli import parse_duration
from osqueue_io.storage import ObjectStore, StorageConfigError, open_store

__all__ = ["build_parser", "load_handler", "main"]

log = logging.getLogger("osqueue.runner")

# The broker's exit codes (osqueue_io.server.app), for the same situations.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: The longest --data URL accepted (longer ones are surely a mistake).
MAX_URL_LENGTH = 4096

#: The command's name in usage and error lines (another entry point passes its own).
PROG = "python -m osqueue_io.worker"


class HandlerNotFound(Exception):
    """``module:function`` does not name a callable that can be imported; the message
    (one line) says why."""


# -- argument types --------------------------------------------------------------------


def parse_handler_spec(text: str) -> str:
    """``module:function`` (``function`` may be ``object.attribute``), checked for shape
    only: importing waits until the whole command line is known to be good."""
    module, colon, attribute = text.partition(":")
    parts = [*module.split("."), *attribute.split(".")]
    if not colon or not all(part.isidentifier() for part in parts):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not module:function (e.g. tasks:handle or app.jobs:Worker.run)"
        )
    return text


def parse_broker(text: str) -> str:
    """``host:port`` of a gRPC broker (``[v6]:port`` for IPv6 literals)."""
    parsed = split_host_port(text)
    if parsed is None or not parsed[0] or len(text) > MAX_ID_LENGTH:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not host:port: use e.g. 127.0.0.1:9090 or [::1]:9090"
        )
    return text.strip()


def parse_data(text: str) -> str:
    """A storage URL or path; that ``open_store`` can use it is checked in :func:`main`."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    if len(text) > MAX_URL_LENGTH:
        raise argparse.ArgumentTypeError(
            f"is {len(text)} characters long; the limit is {MAX_URL_LENGTH}"
        )
    return text


def parse_queue(text: str) -> str:
    """A queue name (1 to 64 characters of ``[A-Za-z0-9._:-]``)."""
    try:
        return check_queue_name(text)
    except InvalidArgument as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_concurrency(text: str) -> int:
    """A whole number from 1 to ``MAX_CLAIM_COUNT``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CLAIM_COUNT:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a whole number from 1 to {MAX_CLAIM_COUNT}"
        )
    return value


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)  # 30s, 500ms, 1m30s, with its own clear error


def parse_grace(text: str) -> float:
    """Seconds (or a duration such as ``1m30s``) from 0 to ``MAX_GRACE``."""
    seconds = _seconds(text)
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_GRACE):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r}: the grace period must be between 0 and {MAX_GRACE:g} seconds"
        )
    return seconds


def parse_poll(text: str) -> float:
    """Seconds (or a duration) above 0, at most ``MAX_CLAIM_WAIT``."""
    seconds = _seconds(text)
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_CLAIM_WAIT):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r}: a claim waits more than 0 and at most {MAX_CLAIM_WAIT:g} seconds"
        )
    return seconds


def parse_worker_id(text: str) -> str:
    """A non-empty id of at most ``MAX_ID_LENGTH`` characters (not echoed back)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise argparse.ArgumentTypeError(
            f"is {len(text)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    return text


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run a worker: claim jobs and call HANDLER (module:function, importable from "
            "the current directory) on each, CONCURRENCY at a time, with heartbeats. A "
            "return completes the job (bytes returned become its result), an exception "
            "fails it (retried per the queue's policy). The handler gets a "
            "ClaimedJob[bytes]: job.item is the payload, decode it yourself (e.g. "
            "json.loads(job.item)). An `async def` handler runs on the event loop, a "
            "plain function in a worker thread. SIGINT or SIGTERM stops gracefully: no "
            "more claims, unstarted jobs released, running handlers given --grace "
            "seconds, then cancelled and their jobs released (a handler running in a "
            "thread cannot be stopped: its job is released and the process exits "
            "without it). A second signal skips the grace period. Exit status: 0 after "
            "a stop, 1 if the worker failed, 2 for a bad command line."
        ),
    )
    parser.add_argument(
        "handler",
        type=parse_handler_spec,
        metavar="MODULE:FUNCTION",
        help="the job handler, e.g. tasks:handle (module tasks.py in the current "
        "directory, function handle)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--broker",
        type=parse_broker,
        metavar="HOST:PORT",
        help="claim from the gRPC broker at this address (python -m osqueue_io.server)",
    )
    source.add_argument(
        "--data",
        type=parse_data,
        metavar="URL",
        help="run an embedded broker on this storage instead: a directory, file:///dir, "
        "s3://bucket/prefix, gs://..., az://... or memory:// (see docs/storage.md). "
        "Only one broker owns a queue at a time: a second one takes it over",
    )
    parser.add_argument(
        "--queue",
        type=parse_queue,
        action="append",
        metavar="NAME",
        help=f"a queue to claim from; repeat for several (at most {MAX_QUEUES_PER_CLAIM}) "
        f"(default: {DEFAULT_QUEUE})",
    )
    parser.add_argument(
        "--concurrency",
        type=parse_concurrency,
        default=1,
        metavar="N",
        help=f"handlers running at once, 1 to {MAX_CLAIM_COUNT} (default: 1)",
    )
    parser.add_argument(
        "--grace",
        type=parse_grace,
        default=30.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long running handlers may take to finish before "
        f"they are cancelled and their jobs released; 0 to {MAX_GRACE:g}, plain seconds "
        "or e.g. 1m30s (default: 30)",
    )
    parser.add_argument(
        "--poll",
        type=parse_poll,
        default=5.0,
        metavar="SECONDS",
        help="how long one claim waits for a job before asking again (a stop does not "
        f"wait for it); above 0, at most {MAX_CLAIM_WAIT:g} (default: 5)",
    )
    parser.add_argument(
        "--worker-id",
        type=parse_worker_id,
        default=None,
        metavar="ID",
        help=f"this worker's name as the holder of its jobs, at most {MAX_ID_LENGTH} "
        "characters (default: host:pid:random)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="logging verbosity; logs go to stderr (default: INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default="text",
        help="text lines, or one JSON object a line (default: text)",
    )
    parser.add_argument(
        "--event-loop",
        choices=eventloop.CHOICES,
        default=None,
        help="the asyncio event loop the worker runs on: asyncio's own, uvloop (pip "
        "install 'osqueue[fast]'), or auto (uvloop when installed) "
        f"(default: ${eventloop.ENV_VAR}, else asyncio)",
    )
    add_client_flags(parser)
    return parser


# -- the handler -----------------------------------------------------------------------


def load_handler(spec: str) -> Callable[..., object]:
    """Import ``module:function`` (the current directory first on the import path, as
    ``python -m`` and other runners have it). Raises :class:`HandlerNotFound`."""
    module_name, _, attribute = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
    except Exception as error:
        first_line = (str(error).splitlines() or [""])[0]
        raise HandlerNotFound(
            f"cannot import module {module_name!r}: {type(error).__name__}: {first_line}"
        ) from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerNotFound(f"module {module_name!r} has no {attribute!r}") from None
    if not callable(target):
        raise HandlerNotFound(
            f"{spec!r} is {type(target).__name__}, not a function: name a function or "
            "another callable"
        )
    return target


# -- running ---------------------------------------------------------------------------


@attrs.frozen
class _Settings:
    """What :func:`run_worker` gets from the command line."""

    concurrency: int
    queues: tuple[str, ...]
    grace: float
    poll: float


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run a worker as the command line says; returns the exit status (argparse exits
    with 2 itself for a bad command line). ``prog`` names the command in its usage."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    queues = tuple(dict.fromkeys(args.queue or [DEFAULT_QUEUE]))
    if len(queues) > MAX_QUEUES_PER_CLAIM:
        parser.error(f"argument --queue: at most {MAX_QUEUES_PER_CLAIM} queues, got {len(queues)}")
    try:
        loop = eventloop.resolve(args.event_loop)
    except ValueError as error:
        parser.error(f"argument --event-loop: {error}")
    try:
        handler = cast("Handler[bytes]", load_handler(args.handler))
    except HandlerNotFound as error:
        parser.error(f"argument MODULE:FUNCTION: {error}")
    try:
        security = client_security(args)
    except ValueError as error:
        parser.error(str(error))
    store: ObjectStore | None = None
    if args.data is not None:
        try:
            store = open_store(args.data)
        except (ValueError, StorageConfigError) as error:
            parser.error(f"argument --data: {error}")
    logs.configure_logging(args.log_level, args.log_format)
    settings = _Settings(args.concurrency, queues, args.grace, args.poll)

    def open_queue() -> AbstractAsyncContextManager[JobQueue[bytes]]:
        if store is not None:
            return EmbeddedQueue(store, bytes, worker_id=args.worker_id)
        return RemoteQueue(
            args.broker,
            bytes,
            worker_id=args.worker_id,
            ssl_context=security.ssl_context,
            token=security.token,
        )

    async def run() -> int:
        try:
            return await _serve(open_queue, handler, settings)
        finally:
            if store is not None:
                await store.aclose()

    # The embedded broker's storage and the gRPC client need asyncio (or uvloop).
    return eventloop.run(run, loop)


async def _serve(
    open_queue: Callable[[], AbstractAsyncContextManager[JobQueue[bytes]]],
    handler: Handler[bytes],
    settings: _Settings,
) -> int:
    stop, stop_now = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as watchers:
        # Before opening the queue: a signal while an embedded broker takes over stops
        # the worker right after, instead of killing the process halfway.
        await watchers.start(_watch_signals, stop, stop_now, settings.grace)
        try:
            async with open_queue() as queue:
                await run_worker(
                    queue,
                    handler,
                    concurrency=settings.concurrency,
                    queues=settings.queues,
                    grace=settings.grace,
                    poll=settings.poll,
                    stop=stop,
                    stop_now=stop_now,
                )
            code = EXIT_OK
        except (OsqueueError, OSError) as error:
            log.error("the worker failed: %s", error)
            code = EXIT_FAILED
        watchers.cancel_scope.cancel()
    return code


async def _watch_signals(
    stop: anyio.Event,
    stop_now: anyio.Event,
    grace: float,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not stop.is_set():
                log.info(
                    "%s: stopping (no more claims; running handlers get %gs; a second "
                    "signal stops them now)",
                    name,
                    grace,
                )
                stop.set()
            else:
                log.warning("%s again: stopping now; releasing the jobs still running", name)
                stop_now.set()
