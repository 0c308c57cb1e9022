"""Broker tuning knobs, all with defaults a user of a job queue would expect."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from osqueue_core.limits import MAX_COUNTER, MAX_LEASE, MIN_LEASE, check_queue_name
from osqueue_core.retry import RetryPolicy

MiB = 1024 * 1024
#: Most jobs in one segment.
MAX_SEGMENT_JOBS = 1 << 20
#: (epoch, seq) pairs on which a custom ``job_id_seq`` must invert ``job_id_factory``.
_ID_SAMPLES = ((1, 0), (1, 1), (7, 41), (1000, 123_456_789), (999_999, 2**40 + 3))


def default_job_id(epoch: int, seq: int) -> str:
    """Job ids without entropy: the FIFO sequence (zero-padded, so ids sort) and epoch.

    Epochs never repeat (each takeover reserves its epoch with a create-only marker
    object), so ids stay unique even across a state restored from a backup.
    """
    return f"{seq:012d}-{epoch}"


def default_job_seq(job_id: str) -> int | None:
    """The inverse of :func:`default_job_id`: the seq ``job_id`` was made for, or None
    when the default factory did not make it."""
    head, dash, tail = job_id.partition("-")
    if not dash or len(head) < 12 or not (head + tail).isascii():
        return None
    if not head.isdigit() or not tail.isdigit():
        return None
    seq = int(head)
    return seq if default_job_id(int(tail), seq) == job_id else None


@attrs.frozen
class BrokerConfig:
    """Configuration of one :class:`~osqueue_core.Broker`. Times are seconds."""

    #: A claimed job whose worker sends no heartbeat for this long loses its lease: the
    #: attempt counts as failed (retried after the queue's backoff, or dead).
    heartbeat_timeout: float = 30.0
    #: Group commit: at most this many requests in one state write (a PushBatch is one
    #: request of up to this many jobs) ...
    max_batch_ops: int = 1000
    #: ... and at most this many pushed payload bytes.
    max_batch_bytes: int = 8 * MiB
    #: Wait this long after the first change before writing, to gather a bigger batch.
    linger: float = 0.0
    #: Gather after release: after a write lands, a dirty batch that is not full waits
    #: until as many requests arrived as that write released (its callers came back),
    #: at most ``gather`` times the measured write latency and ``gather_max`` seconds.
    #: 0 turns it off (the next write leaves as soon as the previous one landed).
    gather: float = 0.5
    gather_max: float = 0.05
    #: Pushes with a larger payload are refused with PayloadTooLarge.
    max_payload_bytes: int = 1 * MiB
    #: How failed jobs are retried (backoff, attempts), for every queue ...
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    #: ... except the queues named here (queue name -> its policy).
    queue_retry: Mapping[str, RetryPolicy] = attrs.field(factory=dict, hash=False)
    #: Dead letters stay in the state (listable, redrivable) this long after they died,
    #: and at most this many (the oldest go first); then they are archived like
    #: completed jobs, status ``dead``.
    dead_retention: float = 7 * 86400.0
    max_dead: int = 10_000
    #: A push whose idempotency key matches a job finished less than this long ago
    #: returns that job; at most ``max_remembered_keys`` finished jobs' keys are kept
    #: (the oldest are forgotten first). Keys of jobs in the state always match.
    idempotency_retention: float = 86400.0
    max_remembered_keys: int = 10_000
    #: Largest result a worker may hand back with ``complete``.
    max_result_bytes: int = 64 * 1024
    #: Backpressure: commands waiting for room in a batch (while a write is in flight)
    #: beyond this many, or beyond this many payload bytes, are refused with Overloaded.
    max_queued_commands: int = 10_000
    max_queued_bytes: int = 64 * MiB
    #: Claims waiting for a job beyond this many are refused with Overloaded.
    max_waiting_claims: int = 10_000
    #: When storage has failed every state operation for this long (or one has been in
    #: flight this long), held and new requests are answered StorageUnavailable instead
    #: of waiting; the broker keeps retrying. Keep it below your clients' timeouts.
    stall_timeout: float = 5.0
    #: A repeated Complete/Fail from the worker that finished a job is answered like the
    #: first for this long after the job left the state (remembered in memory only, for
    #: at most ``reply_memory_size`` jobs), so a retry after a lost answer does not read
    #: as "not found".
    reply_memory: float = 300.0
    reply_memory_size: int = 10_000
    #: Key of the state object.
    state_key: str = "state.json"
    #: Archive objects live under ``<archive_prefix><bucket>/``.
    archive_prefix: str = "archive/"
    #: ``strftime`` format of the UTC time bucket of an archived job (hourly by default).
    archive_bucket_format: str = "%Y-%m-%dT%H"
    #: Every takeover reserves its epoch with a create-only object under this prefix, so
    #: that epochs (hence job ids and archive keys) never repeat, even after the state
    #: object is restored from a backup.
    epoch_prefix: str = "epochs/"
    #: A broker that keeps losing its takeover write to a busy owner asks it, through
    #: this small object, to pause its writes for a moment.
    takeover_request_key: str = "takeover.json"
    #: A busy owner reads the takeover request this often (never while idle: an idle
    #: owner does not write, so it cannot starve a takeover).
    takeover_check: float = 1.0
    #: The longest an owner pauses its writes for one takeover request.
    takeover_yield_max: float = 10.0
    #: A takeover that keeps losing to another writer gives up after this long.
    takeover_timeout: float = 60.0
    #: Start a new, empty queue even though the state object is missing while epoch
    #: markers or archive objects of an earlier queue exist (by default: StateMissing).
    recreate: bool = False
    #: Backoff between retries of a failed storage operation: first delay, then doubling.
    retry_initial: float = 0.05
    retry_max: float = 5.0
    #: Consecutive failed storage operations tolerated while starting before giving up.
    start_attempts: int = 5
    #: An idle broker checks the state's version this often to learn early that another
    #: broker took over (None: only its next write or heartbeat finds out).
    ownership_check: float | None = None
    #: High availability (docs/high-availability.md). With ``owner_lease`` (seconds) the owner
    #: promises to change the state object at least that often: an idle owner writes a
    #: renewal every ``owner_lease / 3`` (its busy writes count), and a standby that sees no
    #: new version for that long takes over. None: no renewals (an idle broker writes
    #: nothing) and no standby can tell this owner is alive.
    owner_lease: float | None = None
    #: Start as a standby: watch the state and take it over only once its owner's lease
    #: has lapsed (by this broker's own clock), it released ownership, or the state is
    #: absent; a takeover lost to another broker goes back to watching. Needs ``owner_lease``
    #: (used for an owner that published none). Otherwise a broker displaces the owner
    #: at once.
    standby: bool = False
    #: How often a standby checks the state's version (a HEAD).
    standby_poll: float = 1.0
    #: Makes a job id from (epoch, seq). Must be unique for distinct (epoch, seq) and at
    #: most ``MAX_ID_LENGTH`` characters long.
    job_id_factory: Callable[[int, int], str] = default_job_id
    #: The inverse of a custom ``job_id_factory``: the seq an id was made for, or None
    #: for an id it did not make (any id a client sends; raising counts as None). A
    #: broker needs it to find a job spilled into a segment by its id, so with a custom
    #: factory and no inverse it never spills. Checked on a few ids when configured.
    job_id_seq: Callable[[str], int | None] | None = None
    #: Segments (docs/architecture.md, "Segments"): untouched ready jobs move out of the
    #: state into immutable objects under ``segment_prefix``. A spill starts once this
    #: many inline ready jobs (or ``spill_bytes`` of their payloads) could move, and
    #: takes up to ``segment_jobs`` / ``segment_bytes`` of them. None: never spill (nor
    #: with a custom ``job_id_factory`` without its ``job_id_seq``).
    segment_prefix: str = "segments/"
    spill_jobs: int | None = 1024
    spill_bytes: int = 1 * MiB
    segment_jobs: int = 4096
    segment_bytes: int = 2 * MiB
    #: Memory for loaded segments (counted as 3x their stored size: their parsed
    #: records), for claims and read-ahead; the best ``read_ahead`` segments of each
    #: queue are read before a claim needs them.
    segment_cache_bytes: int = 64 * MiB
    read_ahead: int = 2

    @property
    def spills(self) -> bool:
        """Whether this broker moves untouched jobs into segments."""
        invertible = self.job_id_factory is default_job_id or self.job_id_seq is not None
        return self.spill_jobs is not None and invertible

    def seq_of(self, job_id: str) -> int | None:
        """The seq job ``job_id`` was made for (by ``job_id_seq``, or the default
        factory's inverse), or None: not an id of this broker's factory."""
        inverse = self.job_id_seq or default_job_seq
        try:
            seq = inverse(job_id)
        except Exception:
            # Clients name any id they like; one the user's inverse chokes on is not
            # one of its ids, and its exception must not escape the core.
            return None
        return seq if type(seq) is int and 0 <= seq < MAX_COUNTER else None

    def __attrs_post_init__(self) -> None:
        positive = {
            "heartbeat_timeout": self.heartbeat_timeout,
            "stall_timeout": self.stall_timeout,
            "reply_memory": self.reply_memory,
            "takeover_check": self.takeover_check,
            "takeover_yield_max": self.takeover_yield_max,
            "takeover_timeout": self.takeover_timeout,
            "dead_retention": self.dead_retention,
            "idempotency_retention": self.idempotency_retention,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive")
        at_least_one = {
            "max_batch_ops": self.max_batch_ops,
            "max_batch_bytes": self.max_batch_bytes,
            "max_queued_commands": self.max_queued_commands,
            "max_queued_bytes": self.max_queued_bytes,
            "max_waiting_claims": self.max_waiting_claims,
            "reply_memory_size": self.reply_memory_size,
            "start_attempts": self.start_attempts,
            "max_dead": self.max_dead,
            "max_remembered_keys": self.max_remembered_keys,
            "spill_bytes": self.spill_bytes,
            "segment_jobs": self.segment_jobs,
            "segment_bytes": self.segment_bytes,
            "segment_cache_bytes": self.segment_cache_bytes,
        }
        for name, count in at_least_one.items():
            if count < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.spill_jobs is not None and self.spill_jobs < 1:
            raise ValueError("spill_jobs must be at least 1 (or None: never spill)")
        if self.segment_jobs > MAX_SEGMENT_JOBS or self.read_ahead < 0:
            raise ValueError(f"need segment_jobs <= {MAX_SEGMENT_JOBS} and read_ahead >= 0")
        if self.linger < 0:
            raise ValueError("linger must not be negative")
        if not (0 <= self.gather <= 10 and 0 <= self.gather_max <= 60):
            raise ValueError("need 0 <= gather <= 10 and 0 <= gather_max <= 60")
        if self.max_result_bytes < 0:
            raise ValueError("max_result_bytes must not be negative")
        for name, policy in self.queue_retry.items():
            check_queue_name(name)
            if not isinstance(policy, RetryPolicy):
                raise ValueError("queue_retry maps queue names to RetryPolicy values")
        if self.ownership_check is not None and not self.ownership_check > 0:
            raise ValueError("ownership_check must be positive (or None)")
        if self.owner_lease is not None and not MIN_LEASE <= self.owner_lease <= MAX_LEASE:
            raise ValueError(
                f"owner_lease must lie in [{MIN_LEASE:g}, {MAX_LEASE:g}] seconds (or None)"
            )
        if self.standby and self.owner_lease is None:
            raise ValueError(
                "a standby needs an owner_lease (the period it waits without renewals)"
            )
        if not 0 < self.standby_poll <= (self.owner_lease or MAX_LEASE) / 2:
            raise ValueError("standby_poll must be positive and at most half the lease")
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            raise ValueError("need 0 < retry_initial <= retry_max")
        keys = (self.state_key, self.takeover_request_key)
        prefixes = (self.archive_prefix, self.epoch_prefix, self.segment_prefix)
        if not all(keys) or not all(p.endswith("/") for p in prefixes):
            raise ValueError("keys must be non-empty and prefixes must end with '/'")
        if self.job_id_seq is not None:
            self._check_job_id_seq()

    def _check_job_id_seq(self) -> None:
        if not callable(self.job_id_seq):
            raise ValueError("job_id_seq must be a function from a job id to its seq (or None)")
        for epoch, seq in _ID_SAMPLES:
            job_id = self.job_id_factory(epoch, seq)
            if self.seq_of(job_id) != seq:
                raise ValueError(
                    f"job_id_seq is not the inverse of job_id_factory: the id made for "
                    f"(epoch {epoch}, seq {seq}) does not give seq {seq} back"
                )


def backoff(config: BrokerConfig, failures: int) -> float:
    """Seconds to wait before retrying after the ``failures``-th consecutive failure:
    ``retry_initial`` doubling, at most ``retry_max``."""
    return float(min(config.retry_max, config.retry_initial * 2 ** (max(1, failures) - 1)))


def retry_policy(config: BrokerConfig, queue: str) -> RetryPolicy:
    """The retry policy of ``queue``."""
    return config.queue_retry.get(queue, config.retry)
