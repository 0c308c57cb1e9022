"""Where a scale-out group keeps each queue, and how its job ids name their queue.

A group (docs/high-availability.md, "Scale-out") runs every queue of a list in its own
state object, under its own prefix of the one bucket the members share::

    <data>/queues/<queue>/state.json      the queue's state (its owner and address)
    <data>/queues/<queue>/archive/ ...    its archive, epoch markers, takeover request,
                                          segments (each prefix of a BrokerConfig)
    <data>/group/members/<slot>.json      who is in the group (osqueue_io.group.members)

A job id carries its queue, ``<queue>/<seq:012d>-<epoch>``, so that a call naming
only an id (heartbeat, complete, cancel...) can be routed to the queue's owner: queue
names never contain ``/``. Everything here is pure: members and clients agree on it by
construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from osqueue_core import BrokerConfig, InvalidArgument, check_queue_name, default_job_seq

#: Most queues in one group: each is a state object, a standby per member, a HEAD per
#: standby poll; a group this large already costs each member ~1,000 HEADs a second.
MAX_GROUP_QUEUES = 1000
#: Where the queues live, and the members.
QUEUES_PREFIX = "queues/"
MEMBERS_PREFIX = "group/members/"


def check_group(queues: object) -> tuple[str, ...]:
    """The queue names of a group, checked: 1 to :data:`MAX_GROUP_QUEUES` valid queue
    names (``check_queue_name``), none twice, in the order given."""
    if isinstance(queues, str) or not isinstance(queues, Sequence):
        raise InvalidArgument("a group is a list of queue names")
    if not 1 <= len(queues) <= MAX_GROUP_QUEUES:
        raise InvalidArgument(f"a group has 1 to {MAX_GROUP_QUEUES} queues, got {len(queues)}")
    names = tuple(check_queue_name(name) for name in queues)
    if len(set(names)) != len(names):
        raise InvalidArgument("a group names a queue more than once")
    return names


def parse_group(text: str) -> tuple[str, ...]:
    """``emails,video,reports`` (spaces around names allowed) as checked queue names."""
    if len(text) > MAX_GROUP_QUEUES * 66:
        raise InvalidArgument(f"the group list is {len(text)} characters long: too long")
    return check_group([name.strip() for name in text.split(",")])


def queue_prefix(queue: str) -> str:
    return f"{QUEUES_PREFIX}{queue}/"


def state_key(queue: str) -> str:
    """The key of ``queue``'s state object (relative to the group's data URL)."""
    return queue_prefix(queue) + "state.json"


@attrs.frozen
class QueueIds:
    """The job ids of one queue of a group: ``make`` is its ``job_id_factory``,
    ``seq`` the inverse (``job_id_seq``), so its jobs still spill into segments."""

    queue: str

    def make(self, epoch: int, seq: int) -> str:
        return f"{self.queue}/{seq:012d}-{epoch}"

    def seq(self, job_id: str) -> int | None:
        queue, slash, rest = job_id.partition("/")
        return default_job_seq(rest) if slash and queue == self.queue else None


def job_queue(job_id: str) -> str | None:
    """The queue a group's job id names (None: not a group's id)."""
    queue, slash, _ = job_id.partition("/")
    return queue if slash and queue else None


def queue_config(config: BrokerConfig, queue: str) -> BrokerConfig:
    """``config`` for ``queue``'s broker in a group: its keys and prefixes under the
    queue's prefix, ids that name the queue, and a standby (every member watches every
    queue; owner leases decide who serves)."""
    prefix = queue_prefix(queue)
    ids = QueueIds(queue)
    return attrs.evolve(
        config,
        state_key=prefix + "state.json",
        archive_prefix=prefix + "archive/",
        epoch_prefix=prefix + "epochs/",
        takeover_request_key=prefix + "takeover.json",
        segment_prefix=prefix + "segments/",
        job_id_factory=ids.make,
        job_id_seq=ids.seq,
        standby=True,
    )
