"""Exit codes of the ``osqueue`` command, and which failure gets which.

=====  ====================================================================
``0``  done
``1``  storage or broker failure: unreachable, refusing, stalled (retry later)
``2``  usage: a bad option or argument (the broker's ``InvalidArgument`` too)
``3``  not found: no such job, not a dead letter, already finished, no state object
``4``  unreadable: the state, a segment or an archive object is corrupt, missing while
       referenced, or written by a newer osqueue
=====  ====================================================================

Errors are mapped by their ``grpc_status``, as every other shell of osqueue maps them,
with two exceptions: :class:`~osqueue_core.UnsupportedSchema` (UNAVAILABLE on the wire,
where a client should wait for an upgraded broker; here, a reader too old for the data)
and storage errors, which are failures (``1``) unless the object is damaged (``4``).
"""

from __future__ import annotations

from osqueue_core import OsqueueError, UnsupportedSchema
from osqueue_io.storage import StorageError

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "CliError",
    "exit_code_of",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNREADABLE = 4

_BY_STATUS = {
    "INVALID_ARGUMENT": EXIT_USAGE,
    "NOT_FOUND": EXIT_NOT_FOUND,
    # JobNotDead (redrive or purge of a job that is not a dead letter) and
    # JobAlreadyFinished (cancel of a finished job): the job is not where it was asked for.
    "FAILED_PRECONDITION": EXIT_NOT_FOUND,
    "DATA_LOSS": EXIT_UNREADABLE,
}


class CliError(Exception):
    """A failure the command reports as one line on stderr, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED, command: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        #: The command that failed, as typed (``osqueue jobs show``), once known.
        self.command = command


def exit_code_of(error: OsqueueError) -> int:
    """The exit code for an osqueue error (storage errors included)."""
    if isinstance(error, UnsupportedSchema):
        return EXIT_UNREADABLE
    if isinstance(error, StorageError):
        return EXIT_UNREADABLE if error.grpc_status == "DATA_LOSS" else EXIT_FAILED
    return _BY_STATUS.get(error.grpc_status, EXIT_FAILED)
