"""osqueue_core: the Sans-IO state machine of the osqueue job queue.

Feed a :class:`Broker` inputs (``start``, ``submit``, ``receive``, ``tick``,
``cancel_claim``, ``stop``), each with ``now`` (UNIX seconds); after each, drain
``take_effects()`` and execute them; call ``tick`` at ``next_deadline()``. Nothing in
this package does I/O, reads a clock or draws randomness. See docs/architecture.md.
"""

from osqueue_core.archive import archive_bucket, archive_key
from osqueue_core.broker import Broker, BrokerStats
from osqueue_core.codec import (
    SCHEMA_VERSION,
    DecodedState,
    StateHeader,
    decode_header,
    decode_state,
    encode_archive,
    encode_job,
    encode_state,
    peek_owner,
)
from osqueue_core.commands import (
    Claim,
    Command,
    Complete,
    Fail,
    Heartbeat,
    Push,
    PushBatch,
    RequestId,
)
from osqueue_core.config import BrokerConfig, default_job_id
from osqueue_core.effects import Effect, ReadState, Reply, WriteArchive, WriteState
from osqueue_core.errors import (
    BrokerNotRunning,
    BrokerReplaced,
    BrokerStopping,
    CorruptState,
    InvalidArgument,
    JobNotFound,
    LeaseLost,
    OsqueueError,
    PayloadTooLarge,
    StateDiverged,
    UnsupportedSchema,
)
from osqueue_core.events import (
    ArchiveWritten,
    StateRead,
    StateWritten,
    StorageFailed,
    StorageResult,
    WriteConflicted,
)
from osqueue_core.job import Job, JobStatus
from osqueue_core.owner import Owner
from osqueue_core.phase import Phase
from osqueue_core.results import (
    Claimed,
    Completed,
    Failed,
    LeaseExtended,
    NothingToClaim,
    Pushed,
    PushedBatch,
    Result,
)

__all__ = [
    "SCHEMA_VERSION",
    "ArchiveWritten",
    "Broker",
    "BrokerConfig",
    "BrokerNotRunning",
    "BrokerReplaced",
    "BrokerStats",
    "BrokerStopping",
    "Claim",
    "Claimed",
    "Command",
    "Complete",
    "Completed",
    "CorruptState",
    "DecodedState",
    "Effect",
    "Fail",
    "Failed",
    "Heartbeat",
    "InvalidArgument",
    "Job",
    "JobNotFound",
    "JobStatus",
    "LeaseExtended",
    "LeaseLost",
    "NothingToClaim",
    "OsqueueError",
    "Owner",
    "PayloadTooLarge",
    "Phase",
    "Push",
    "PushBatch",
    "Pushed",
    "PushedBatch",
    "ReadState",
    "Reply",
    "RequestId",
    "Result",
    "StateDiverged",
    "StateHeader",
    "StateRead",
    "StateWritten",
    "StorageFailed",
    "StorageResult",
    "UnsupportedSchema",
    "WriteArchive",
    "WriteConflicted",
    "WriteState",
    "archive_bucket",
    "archive_key",
    "decode_header",
    "decode_state",
    "default_job_id",
    "encode_archive",
    "encode_job",
    "encode_state",
    "peek_owner",
]
