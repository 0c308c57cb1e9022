"""Scale-out: a group of broker processes sharing one bucket splits its queues.

Each queue of the group lives in its own state object (:mod:`~osqueue_io.group.layout`);
every member runs a standby broker for every queue, so each queue is owned by exactly
one live member (owner leases and fencing, docs/high-availability.md); members keep
records in the bucket (:mod:`~osqueue_io.group.membership`) and balance the queues by
count (:mod:`~osqueue_io.group.balance`); one gRPC server per member routes each call
to its queue's broker (:mod:`~osqueue_io.group.service`), and clients route each call
to its queue's owner (:class:`GroupConnection`). Run a member with
``python -m osqueue_io.server --group q1,q2,... --data URL``.
"""

from typing import TYPE_CHECKING, Any

from osqueue_io.group.balance import Balancer, Decision, quota
from osqueue_io.group.connection import GroupConnection
from osqueue_io.group.layout import (
    MAX_GROUP_QUEUES,
    QueueIds,
    check_group,
    job_queue,
    parse_group,
    queue_config,
    state_key,
)
from osqueue_io.group.members import MAX_MEMBERS, MemberRecord, Roster

if TYPE_CHECKING:
    from osqueue_io.group.server import GroupServer


def __getattr__(name: str) -> Any:
    # The member's server is built on osqueue_io.server, whose command line imports
    # this package: loaded on first use, so clients never import the server.
    if name == "GroupServer":
        from osqueue_io.group.server import GroupServer

        return GroupServer
    raise AttributeError(name)


__all__ = [
    "MAX_GROUP_QUEUES",
    "MAX_MEMBERS",
    "Balancer",
    "Decision",
    "GroupConnection",
    "GroupServer",
    "MemberRecord",
    "QueueIds",
    "Roster",
    "check_group",
    "job_queue",
    "parse_group",
    "queue_config",
    "quota",
    "state_key",
]
