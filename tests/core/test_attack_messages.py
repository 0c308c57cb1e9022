"""Attack: text that reaches error messages whole. docs/architecture.md: a bad command
gets a typed error "whose message never repeats untrusted input beyond 64 characters"
(limits.quote); JobNotFound and LeaseLost repeat job and worker ids whole (up to 256
characters each), and BrokerReplaced repeats the owner identity and address read from
the state object with no limit at all."""

from __future__ import annotations

from osqueue_core import BrokerReplaced, Heartbeat, OsqueueError, decode_state, encode_state
from osqueue_core.codec import encode_job
from osqueue_core.limits import MAX_ID_LENGTH, QUOTE_LENGTH

from .harness import Harness, SimStore


def longest_quoted_run(message: str, text: str) -> int:
    best = 0
    for start in range(len(text)):
        size = best + 1
        while start + size <= len(text) and text[start : start + size] in message:
            best = size
            size += 1
    return best


def test_job_not_found_and_lease_lost_quote_ids_at_most_64_characters() -> None:
    h = Harness.started()
    job_id = "j" * MAX_ID_LENGTH
    worker = "w" * MAX_ID_LENGTH
    error = h.submit(Heartbeat(h.request_id(), job_id, worker)).error  # type: ignore[union-attr]
    assert isinstance(error, OsqueueError)
    assert longest_quoted_run(str(error), job_id) <= QUOTE_LENGTH, str(error)


def test_broker_replaced_does_not_repeat_a_megabyte_identity_from_storage() -> None:
    store = SimStore()
    h = Harness.started(store)
    h.push()
    decoded = decode_state(store.get("state.json"))  # type: ignore[arg-type]
    import attrs

    owner = attrs.evolve(decoded.header.owner, identity="x" * 1_000_000, epoch=9)
    header = attrs.evolve(decoded.header, owner=owner, revision=decoded.header.revision + 1)
    store.put("state.json", encode_state(header, [encode_job(j) for j in decoded.jobs]))
    error = h.push().error  # type: ignore[union-attr]
    assert isinstance(error, BrokerReplaced)
    assert len(str(error)) < 4096, f"a {len(str(error))}-character error message"
