"""Reaching the broker that owns the queue, for the commands that change it.

Every change goes through the owner (one writer of the state object): ``--broker
HOST:PORT`` names it, or, without it, the owner is found in the state object the storage
URL points to (docs/high-availability.md, "Discovery"), and calls follow a failover for
up to the command's ``--timeout``. Before dialling a discovered owner the state is looked
at once, so a queue whose broker stopped cleanly fails at once with what to do instead
of retrying for the whole timeout. A secured broker is dialled over TLS with a token
(``--tls-ca``, ``--token-file``: :class:`~osqueue_io.security.flags.ClientSecurity`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from osqueue_core import decode_header, quote
from osqueue_io.cli.exits import EXIT_NOT_FOUND, EXIT_USAGE, CliError
from osqueue_io.remote import Worker
from osqueue_io.security.flags import ClientSecurity
from osqueue_io.storage import ObjectStore

__all__ = ["owning_broker"]

#: A call's own deadline; the whole command (failovers included) gets ``--timeout``.
CALL_TIMEOUT = 10.0


@asynccontextmanager
async def owning_broker(
    address: str | None,
    store: ObjectStore | None,
    state_key: str,
    within: float,
    security: ClientSecurity,
) -> AsyncIterator[Worker]:
    """A client of the owning broker: at ``address``, or the owner ``store`` names,
    with ``security``'s TLS and token; its calls follow a failover for up to ``within``
    seconds."""
    if address is None:
        if store is None:
            raise CliError(
                "no broker to send the change to: give --broker HOST:PORT (or set "
                "OSQUEUE_BROKER), or --data URL to find the owner in the storage",
                EXIT_USAGE,
            )
        await _check_owner(store, state_key)
    async with Worker(
        address,
        storage=store if address is None else None,
        state_key=state_key,
        timeout=min(CALL_TIMEOUT, within),
        failover_timeout=within,
        ssl_context=security.ssl_context,
        token=security.token,
    ) as worker:
        yield worker


async def _check_owner(store: ObjectStore, state_key: str) -> None:
    """Fail at once if the state says no broker can be serving it."""
    found = await store.read(state_key)
    if found is None:
        raise CliError(
            f"no state object {quote(state_key)} in {store.url}: no broker has run on this "
            "queue; start one (osqueue server --data URL) or check --data",
            EXIT_NOT_FOUND,
        )
    owner = decode_header(found.data).owner
    if owner.released:
        raise CliError(
            f"no broker is running on {store.url}: its last owner {quote(owner.identity)} "
            "stopped cleanly; start one (osqueue server --data URL), then retry"
        )
    if owner.address is None:
        raise CliError(
            f"the owner {quote(owner.identity)} published no address: give --broker "
            "HOST:PORT (or start brokers with --advertise)",
            EXIT_USAGE,
        )
