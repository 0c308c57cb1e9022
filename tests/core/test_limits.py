"""Every text field of every command has a limit, checked before anything else, and no
error repeats untrusted input unbounded (hardening items 1 and 2)."""

from __future__ import annotations

import pytest

from osqueue_core import (
    MAX_CLAIM_WAIT,
    MAX_ERROR_LENGTH,
    MAX_ID_LENGTH,
    Broker,
    BrokerConfig,
    Claim,
    Complete,
    Fail,
    Heartbeat,
    InvalidArgument,
    PayloadTooLarge,
    Push,
    PushBatch,
    Release,
    clip_error_text,
    quote,
)

from .harness import Harness

HUGE = "x" * 10_000_000  # what an attacker sent: 10 MB, below the gRPC request cap


@pytest.mark.parametrize(
    "make",
    [
        lambda rid: Claim(rid, HUGE),
        lambda rid: Heartbeat(rid, HUGE, "w1"),
        lambda rid: Heartbeat(rid, "j", HUGE),
        lambda rid: Complete(rid, HUGE, "w1"),
        lambda rid: Complete(rid, "j", HUGE),
        lambda rid: Fail(rid, HUGE, "w1"),
        lambda rid: Fail(rid, "j", "w1", HUGE),
        lambda rid: Release(rid, HUGE, "w1"),
    ],
)
def test_over_long_text_is_refused_with_a_short_message_and_nothing_changes(make) -> None:  # type: ignore[no-untyped-def]
    """Before: a 10 MB id was repeated into the error (and so into a gRPC status whose
    header encoding is quadratic), and a 10 MB worker id was stored in the state."""
    h = Harness.started()
    writes = h.writes
    reply = h.submit(make(h.request_id()))
    assert isinstance(reply.error, InvalidArgument)  # type: ignore[union-attr]
    assert len(str(reply.error)) < 200  # type: ignore[union-attr]
    assert "limit" in str(reply.error)  # type: ignore[union-attr]
    assert h.writes == writes, "refused before anything was applied"
    assert h.store.get("state.json") is not None
    assert HUGE[:1000].encode() not in h.store.get("state.json")  # type: ignore[operator]


def test_ids_at_the_limit_are_fine_and_one_more_is_not() -> None:
    h = Harness.started()
    h.push()
    assert h.claim("w" * MAX_ID_LENGTH).result.job_id  # type: ignore[union-attr]
    assert isinstance(h.claim("w" * (MAX_ID_LENGTH + 1)).error, InvalidArgument)  # type: ignore[union-attr]


def test_wrong_types_and_ranges_are_typed_errors() -> None:
    h = Harness.started()
    rid = h.request_id
    for command in (
        Claim(rid(), 42),  # type: ignore[arg-type]
        Claim(rid(), ""),
        Claim(rid(), "w1", -1),
        Claim(rid(), "w1", MAX_CLAIM_WAIT + 1),
        Claim(rid(), "w1", float("nan")),
        Claim(rid(), "w1", True),  # type: ignore[arg-type]
        Fail(rid(), "j", "w1", "e", "yes"),  # type: ignore[arg-type]
        Fail(rid(), "j", "w1", 3),  # type: ignore[arg-type]
        Push(rid(), "text"),  # type: ignore[arg-type]
        PushBatch(rid(), "abc"),  # type: ignore[arg-type]
    ):
        reply = h.submit(command)
        assert isinstance(reply.error, InvalidArgument), command  # type: ignore[union-attr]


def test_a_batch_is_counted_before_its_payloads_are_looked_at() -> None:
    h = Harness.started(config=BrokerConfig(max_batch_ops=3))
    reply = h.submit(PushBatch(h.request_id(), (b"a",) * 4))
    assert isinstance(reply.error, PayloadTooLarge)  # type: ignore[union-attr]


def test_an_unknown_command_is_refused_without_repeating_it() -> None:
    h = Harness.started()

    class Sneaky:
        request_id = 7

        def __repr__(self) -> str:
            return HUGE

    h.broker.submit(Sneaky(), h.now)  # type: ignore[arg-type]
    h.flush()
    error = h.replies[7].error
    assert isinstance(error, InvalidArgument)
    assert len(str(error)) < 100
    with pytest.raises(InvalidArgument):
        h.broker.submit(object(), h.now)  # type: ignore[arg-type]


def test_broker_identity_and_address_are_bounded_too() -> None:
    with pytest.raises(InvalidArgument):
        Broker(identity=HUGE, incarnation="i")
    with pytest.raises(InvalidArgument):
        Broker(identity="b", incarnation="i", address=HUGE)


def test_quote_and_clip_bound_what_they_return() -> None:
    assert len(quote(HUGE)) < 100
    assert quote("short") == "'short'"
    clipped = clip_error_text("head " + HUGE + " tail")
    assert len(clipped) <= MAX_ERROR_LENGTH
    assert clipped.startswith("head ")
    assert clipped.endswith(" tail")
    assert clip_error_text("fine") == "fine"
