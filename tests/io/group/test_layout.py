"""Where a group keeps each queue, and job ids that name their queue."""

from __future__ import annotations

import pytest

from osqueue_core import BrokerConfig, InvalidArgument
from osqueue_io.group.layout import (
    MAX_GROUP_QUEUES,
    QueueIds,
    check_group,
    job_queue,
    parse_group,
    queue_config,
    state_key,
)


def test_a_group_is_a_bounded_list_of_distinct_valid_queue_names() -> None:
    assert check_group(["emails", "video"]) == ("emails", "video")
    assert parse_group(" emails , video,reports ") == ("emails", "video", "reports")
    assert len(check_group([f"q{n}" for n in range(MAX_GROUP_QUEUES)])) == MAX_GROUP_QUEUES
    for bad, message in [
        ([], "1 to"),
        ([f"q{n}" for n in range(MAX_GROUP_QUEUES + 1)], "1 to"),
        (["a", "a"], "more than once"),
        (["a/b"], "characters outside"),
        (["ok", ""], "1 to 64 characters"),
        ("emails", "a list"),
        ([7], "must be a string"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            check_group(bad)
    with pytest.raises(InvalidArgument, match="too long"):
        parse_group("a," * 50_000)


def test_each_queue_has_its_own_keys_and_a_standby_with_its_ids() -> None:
    config = queue_config(BrokerConfig(owner_lease=5.0, spill_jobs=8), "emails")
    assert config.state_key == state_key("emails") == "queues/emails/state.json"
    assert (
        config.archive_prefix,
        config.epoch_prefix,
        config.segment_prefix,
        config.takeover_request_key,
    ) == (
        "queues/emails/archive/",
        "queues/emails/epochs/",
        "queues/emails/segments/",
        "queues/emails/takeover.json",
    )
    assert config.standby
    assert config.spills, "the ids' inverse is given: the backlog still spills"
    assert config.job_id_factory(3, 7) == "emails/000000000007-3"
    assert config.seq_of("emails/000000000007-3") == 7


def test_ids_name_their_queue_and_only_their_own_invert() -> None:
    ids = QueueIds("video")
    job_id = ids.make(12, 34)
    assert job_queue(job_id) == "video"
    assert ids.seq(job_id) == 34
    for other in ("emails/000000000034-12", "000000000034-12", "video/34-12", "video/", "x"):
        assert ids.seq(other) is None, other
    assert job_queue("000000000034-12") is None
    assert job_queue("/000000000034-12") is None
