"""Every error osqueue raises or replies with.

One base class, :class:`OsqueueError`. Each subclass says in its message what the caller
can do about it and carries ``grpc_status``: the name of the gRPC status code a server
maps it to (the core cannot import grpclib, so it is the code's name as a string). A
shell maps errors with ``error.grpc_status``, never with an ``isinstance`` ladder.
"""

from __future__ import annotations

from typing import ClassVar

from osqueue_core.quoting import quote


class OsqueueError(Exception):
    """Base class of every error osqueue raises on purpose.

    Anything else escaping the core is a bug.
    """

    grpc_status: ClassVar[str] = "UNKNOWN"
    #: True when retrying the same request later may succeed.
    retryable: ClassVar[bool] = False


class InvalidArgument(OsqueueError):
    """A request was malformed: an empty worker id, an empty job id, a negative wait."""

    grpc_status = "INVALID_ARGUMENT"


class PayloadTooLarge(OsqueueError):
    """A pushed payload is larger than the broker's ``max_payload_bytes``."""

    grpc_status = "RESOURCE_EXHAUSTED"


class JobNotFound(OsqueueError):
    """The job id is unknown: never pushed, or already completed and archived."""

    grpc_status = "NOT_FOUND"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {quote(job_id)} is not in the queue (unknown, or already finished)")
        self.job_id = job_id


class LeaseLost(OsqueueError):
    """The worker no longer holds the job: its lease expired or another worker has it.

    Stop working on the job; it has gone (or will go) back to the queue after its
    backoff, or become a dead letter.
    """

    grpc_status = "FAILED_PRECONDITION"

    def __init__(self, job_id: str, worker_id: str) -> None:
        super().__init__(
            f"worker {quote(worker_id)} no longer holds job {quote(job_id)}: stop working on it; "
            "it was reclaimed after a missed heartbeat or is held by another worker"
        )
        self.job_id = job_id
        self.worker_id = worker_id


class BrokerReplaced(OsqueueError):
    """Another broker took over the state object; this broker will never write again.

    Reconnect to the new owner (``new_identity``/``new_address``) or restart this one.
    """

    grpc_status = "UNAVAILABLE"
    retryable = True

    def __init__(self, new_identity: str, new_epoch: int, new_address: str | None) -> None:
        where = f" at {quote(new_address)}" if new_address else ""
        super().__init__(
            f"this broker was replaced by {quote(new_identity)} (epoch {new_epoch}){where}; "
            "send requests to the new owner"
        )
        self.new_identity = new_identity
        self.new_epoch = new_epoch
        self.new_address = new_address


class NotOwner(BrokerReplaced):
    """This broker is a standby for the state object the request needs
    (docs/high-availability.md): it does not own it, so it serves none of its queues
    until it takes over. (A group member serves the queues it owns meanwhile.)

    Send requests to the owner (``new_identity``/``new_address``, as last seen by this
    standby; empty when it has not read the state yet). A ``BrokerReplaced``, so a client
    that follows a replaced broker follows a standby's answer too.
    """

    def __init__(self, new_identity: str, new_epoch: int, new_address: str | None) -> None:
        if new_identity:
            where = f" at {quote(new_address)}" if new_address else ""
            owner = f"the owner is {quote(new_identity)} (epoch {new_epoch}){where}"
        else:
            owner = "it has not read the state yet"
        OsqueueError.__init__(
            self,
            f"this broker is a standby for this queue's state and does not serve it; "
            f"{owner}: send requests there",
        )
        self.new_identity = new_identity
        self.new_epoch = new_epoch
        self.new_address = new_address


class BrokerStopping(OsqueueError):
    """The broker is shutting down and takes no new requests. Retry against its successor."""

    grpc_status = "UNAVAILABLE"
    retryable = True

    def __init__(self) -> None:
        super().__init__("the broker is shutting down and accepts no new requests")


class BrokerNotRunning(OsqueueError):
    """The broker has stopped, or failed to start; see the chained cause."""

    grpc_status = "UNAVAILABLE"
    retryable = True


class CorruptState(OsqueueError):
    """The stored state object does not parse. The broker refuses to run and never writes.

    Inspect or restore the object by hand; osqueue will not overwrite what it cannot read.
    """

    grpc_status = "DATA_LOSS"


class UnsupportedSchema(OsqueueError):
    """The stored state was written by a newer osqueue (higher ``schema_version``).

    Upgrade this broker. The object is left untouched.
    """

    # Not FAILED_PRECONDITION: clients read that as "you lost the job". This broker
    # simply cannot serve; a newer one can.
    grpc_status = "UNAVAILABLE"

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"the stored state has schema_version {found}, but this osqueue understands "
            f"only up to {supported}: upgrade osqueue; the state was not modified"
        )
        self.found = found
        self.supported = supported


class StateDiverged(OsqueueError):
    """The stored state changed in a way no broker protocol allows (edited by hand?).

    The broker stops writing rather than guess. Inspect the state object.
    """

    grpc_status = "ABORTED"


class Overloaded(OsqueueError):
    """The broker has as many requests waiting as it allows (commands queued behind the
    open batch, or claims waiting for a job). Nothing was done: retry after a pause."""

    grpc_status = "RESOURCE_EXHAUSTED"
    retryable = True


class StorageUnavailable(OsqueueError):
    """Storage has refused or failed the broker's writes for a while (a full disk, lost
    credentials, an outage). The broker keeps retrying; meanwhile requests get this.

    A request answered with it may still be committed when storage recovers (its batch
    is written then): a retried push may duplicate its job.
    """

    grpc_status = "UNAVAILABLE"
    retryable = True


class StateMissing(OsqueueError):
    """The state object is missing, but the queue has history (epoch markers or archive
    objects): it was deleted or the storage URL is wrong. The broker refuses to start a
    new, empty queue over it unless asked to (``BrokerConfig.recreate``, ``--recreate``).
    Restore the state object from a backup, or fix the URL."""

    grpc_status = "DATA_LOSS"


class CallInterrupted(OsqueueError):
    """A call ended without an answer: the broker cancelled it, or its deadline passed.

    It may or may not have taken effect (a retried push may duplicate its job). Retry.
    """

    grpc_status = "CANCELLED"
    retryable = True


class JobNotDead(OsqueueError):
    """Redrive or purge named a job that is not a dead letter (ready, claimed, finished).
    Nothing was changed: list the dead letters and name only those."""

    grpc_status = "FAILED_PRECONDITION"


class JobCancelled(OsqueueError):
    """The job was cancelled while this worker held it (the heartbeat said so). Stop
    working on it: ``processing`` cancels the handler, fails the job (it ends
    cancelled, never retried) and raises this."""

    grpc_status = "CANCELLED"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {quote(job_id)} was cancelled: stop working on it")
        self.job_id = job_id


class JobAlreadyFinished(OsqueueError):
    """The job has finished (completed, dead, cancelled): there is nothing to cancel.
    A dead letter is removed with purge, or run again with redrive."""

    grpc_status = "FAILED_PRECONDITION"

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {quote(job_id)} is already {status}: nothing to cancel")
        self.job_id = job_id
        self.status = status


class SegmentMissing(OsqueueError):
    """A segment object that the state this broker owns references is gone (deleted by
    hand, or the state was restored from a backup without its ``segments/``). The
    broker stops and never writes: restore the segment objects from a backup."""

    grpc_status = "DATA_LOSS"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"segment {quote(key)} is referenced by the state but missing from storage: "
            "its jobs cannot be served; restore it (segments/ is backed up with the state)"
        )
        self.key = key


class Unauthenticated(OsqueueError):
    """The broker requires a bearer token and the call carried none it knows (missing,
    malformed, or not one of its tokens). Nothing was done. Give the client the token
    (``token=``); the message never repeats what was sent."""

    grpc_status = "UNAUTHENTICATED"


class PermissionDenied(OsqueueError):
    """The call's token is valid but its role does not allow this call (a ``read``
    token asking for a redrive), or it names a worker id outside the ones the token may
    use. Nothing was done: use a token with the role the call needs
    (docs/security.md)."""

    grpc_status = "PERMISSION_DENIED"
