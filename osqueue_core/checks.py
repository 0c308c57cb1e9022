"""Refusing malformed commands before anything is done with them.

:func:`check_command` looks at types first, then every length, size, count and range
limit (``osqueue_core.limits`` and ``BrokerConfig``), never at a value beyond its limit.
It raises ``InvalidArgument`` or ``PayloadTooLarge`` and changes nothing.
"""

from __future__ import annotations

from osqueue_core.clock import MAX_WALL
from osqueue_core.commands import (
    Cancel,
    Claim,
    Complete,
    Fail,
    GetJob,
    Heartbeat,
    ListDead,
    NewJob,
    Purge,
    Push,
    PushBatch,
    Redrive,
    Release,
)
from osqueue_core.config import BrokerConfig
from osqueue_core.errors import InvalidArgument, PayloadTooLarge
from osqueue_core.limits import (
    MAX_CLAIM_COUNT,
    MAX_DELAY,
    MAX_PRIORITY,
    check_error_text,
    check_id,
    check_int,
    check_key,
    check_queue_name,
    check_queues,
    check_seconds,
    check_wait,
)
from osqueue_core.retry import MAX_ATTEMPTS

#: Most dead letters one ListDead page may return.
MAX_LIST_LIMIT = 1000


def check_command(config: BrokerConfig, command: object) -> None:
    """Refuse ``command`` if it is malformed or over a limit. See the module docstring."""
    match command:
        case Push():
            check_new_job(config, command.new_job())
        case PushBatch():
            _check_batch(config, command.payloads)
        case Claim():
            check_id("worker_id", command.worker_id)
            check_wait(command.wait)
            check_queues(command.queues)
            check_int("count", command.count, 1, MAX_CLAIM_COUNT)
        case Heartbeat() | Release():
            check_id("job_id", command.job_id)
            check_id("worker_id", command.worker_id)
        case Complete():
            check_id("job_id", command.job_id)
            check_id("worker_id", command.worker_id)
            if command.result is not None:
                _check_bytes(config, command.result, "result", config.max_result_bytes)
        case Fail():
            check_id("job_id", command.job_id)
            check_id("worker_id", command.worker_id)
            check_error_text(command.error)
            if not isinstance(command.requeue, bool):
                raise InvalidArgument("requeue must be true or false")
        case Cancel() | GetJob():
            check_id("job_id", command.job_id)
        case ListDead():
            if command.queue is not None:
                check_queue_name(command.queue)
            check_int("limit", command.limit, 1, MAX_LIST_LIMIT)
            if command.after is not None:
                check_id("after", command.after)
        case Redrive() | Purge():
            _check_selection(config, command.job_ids, command.queue)
        case _:
            raise InvalidArgument(f"not an osqueue command: {type(command).__name__}")


def check_new_job(config: BrokerConfig, job: NewJob, what: str = "payload") -> None:
    _check_bytes(config, job.payload, what, config.max_payload_bytes)
    check_queue_name(job.queue)
    check_int("priority", job.priority, -MAX_PRIORITY, MAX_PRIORITY)
    if job.delay is not None and job.run_at is not None:
        raise InvalidArgument("give delay or run_at, not both")
    if job.delay is not None:
        check_seconds("delay", job.delay, MAX_DELAY)
    if job.run_at is not None:
        check_seconds("run_at", job.run_at, MAX_WALL)
    check_key(job.key)
    if job.max_attempts is not None:
        check_int("max_attempts", job.max_attempts, 1, MAX_ATTEMPTS)


def _check_batch(config: BrokerConfig, items: object) -> None:
    if not isinstance(items, tuple | list):
        raise InvalidArgument("a batch's payloads must be a tuple of bytes or NewJob")
    if len(items) > config.max_batch_ops:
        raise PayloadTooLarge(
            f"a batch of {len(items)} payloads exceeds the broker's limit of "
            f"{config.max_batch_ops}: split it (nothing was pushed)"
        )
    total = 0
    for index, item in enumerate(items):
        what = f"payload {index} of the batch"
        if isinstance(item, NewJob):
            check_new_job(config, item, what)
            total += len(item.payload)
        else:  # a bare payload: the defaults need no check
            _check_bytes(config, item, what, config.max_payload_bytes)
            total += len(item)
    if total > config.max_batch_bytes:
        raise PayloadTooLarge(
            f"a batch of {total} bytes exceeds the broker's limit of "
            f"{config.max_batch_bytes} bytes: split it (nothing was pushed)"
        )


def _check_bytes(config: BrokerConfig, value: object, what: str, limit: int) -> None:
    if not isinstance(value, bytes):
        raise InvalidArgument(f"a job {what} must be bytes, got {type(value).__name__}")
    if len(value) > limit:
        raise PayloadTooLarge(
            f"{what} of {len(value)} bytes exceeds the broker's limit of {limit} bytes: "
            "store large data elsewhere and pass a reference "
            f"({'nothing was pushed' if 'payload' in what else 'nothing was done'})"
        )


def _check_selection(config: BrokerConfig, job_ids: object, queue: object) -> None:
    if not isinstance(job_ids, tuple | list):
        raise InvalidArgument("job_ids must be a list of job ids")
    if bool(job_ids) == (queue is not None):
        raise InvalidArgument("name the jobs (job_ids) or a queue, not both and not neither")
    if queue is not None:
        check_queue_name(queue)
    if len(job_ids) > config.max_batch_ops:
        raise InvalidArgument(
            f"{len(job_ids)} job ids exceed the broker's limit of {config.max_batch_ops}"
        )
    for job_id in job_ids:
        check_id("job_id", job_id)
