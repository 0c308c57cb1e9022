"""Broker tuning knobs, all with defaults a user of a job queue would expect."""

from __future__ import annotations

from collections.abc import Callable

import attrs

MiB = 1024 * 1024


def default_job_id(epoch: int, seq: int) -> str:
    """Job ids without entropy: the FIFO sequence (zero-padded, so ids sort) and epoch."""
    return f"{seq:012d}-{epoch}"


@attrs.frozen
class BrokerConfig:
    """Configuration of one :class:`~osqueue_core.Broker`. Times are seconds."""

    #: A claimed job whose worker sends no heartbeat for this long goes back to the queue.
    heartbeat_timeout: float = 30.0
    #: Group commit: at most this many requests in one state write (a PushBatch is one
    #: request of up to this many jobs) ...
    max_batch_ops: int = 1000
    #: ... and at most this many pushed payload bytes.
    max_batch_bytes: int = 8 * MiB
    #: Wait this long after the first change before writing, to gather a bigger batch.
    linger: float = 0.0
    #: Pushes with a larger payload are refused with PayloadTooLarge.
    max_payload_bytes: int = 1 * MiB
    #: A job claimed this many times is dead-lettered instead of requeued (None: never).
    max_attempts: int | None = None
    #: Key of the state object.
    state_key: str = "state.json"
    #: Archive objects live under ``<archive_prefix><bucket>/``.
    archive_prefix: str = "archive/"
    #: ``strftime`` format of the UTC time bucket of an archived job (hourly by default).
    archive_bucket_format: str = "%Y-%m-%dT%H"
    #: Backoff between retries of a failed storage operation: first delay, then doubling.
    retry_initial: float = 0.05
    retry_max: float = 5.0
    #: Consecutive failed storage operations tolerated while starting before giving up.
    start_attempts: int = 5
    #: An idle broker reads the state this often to learn early that another broker
    #: took over (None: only its next write or heartbeat finds out).
    ownership_check: float | None = None
    #: Makes a job id from (epoch, seq). Must be unique for distinct (epoch, seq).
    job_id_factory: Callable[[int, int], str] = default_job_id

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_timeout <= 0:
            raise ValueError("heartbeat_timeout must be positive")
        if self.max_batch_ops < 1 or self.max_batch_bytes < 1:
            raise ValueError("max_batch_ops and max_batch_bytes must be at least 1")
        if self.linger < 0:
            raise ValueError("linger must not be negative")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")
        if self.ownership_check is not None and not self.ownership_check > 0:
            raise ValueError("ownership_check must be positive (or None)")
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            raise ValueError("need 0 < retry_initial <= retry_max")
