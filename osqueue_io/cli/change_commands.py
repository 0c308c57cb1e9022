"""The commands that change the queue: ``cancel``, ``dead redrive``, ``dead purge``.

The state object has one writer, the broker that owns it, so these send their change to
that broker (``--broker``, or the owner named in the storage: :mod:`.broker`) and report
what it acknowledged: an answer means the change is durable. Redrive and purge are all or
nothing: one id that is not a dead letter refuses the whole command (exit 3).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from osqueue_core import BrokerConfig
from osqueue_io.cli.broker import owning_broker
from osqueue_io.cli.options import (
    Target,
    broker_options,
    json_option,
    parse_job_id,
    parse_queue,
    run_change,
    storage_options,
    with_target,
)
from osqueue_io.cli.output import clean, emit_json
from osqueue_io.remote import Worker
from osqueue_io.storage import ObjectStore

__all__ = ["cancel", "dead_purge", "dead_redrive"]

#: Most ids one redrive or purge may name (the broker's default ``max_batch_ops``).
MAX_SELECTED = BrokerConfig().max_batch_ops


T = TypeVar("T")


def _send(target: Target, change: Callable[[Worker], Awaitable[T]]) -> T:
    """Run ``change`` with a client of the owning broker (see :mod:`.broker`)."""

    async def run(store: ObjectStore | None) -> T:
        async with owning_broker(
            target.broker, store, target.state_key, target.timeout, target.security
        ) as w:
            return await change(w)

    return run_change(target, run)


@click.command()
@click.argument("job_id", metavar="ID", callback=parse_job_id)
@storage_options
@broker_options
@json_option
@with_target
def cancel(target: Target, job_id: str, as_json: bool) -> None:
    """Cancel job ID: a ready or delayed job at once; a claimed one is marked, and its
    worker learns it at its next heartbeat (it ends cancelled unless it completes).

    \b
    Examples:
      osqueue cancel 000000000042-3 --broker 127.0.0.1:9090
      osqueue cancel 000000000042-3 --data s3://bucket/queue --json
    """

    async def change(worker: Worker) -> bool:
        return await worker.cancel(job_id)

    at_once = _send(target, change)
    if as_json:
        emit_json({"job_id": job_id, "at_once": at_once})
    elif at_once:
        click.echo(f"cancelled {clean(job_id, 256)}")
    else:
        click.echo(
            f"cancel requested: {clean(job_id, 256)} is claimed; its worker learns it at "
            "its next heartbeat"
        )


def _dead_command(name: str) -> Callable[[Callable[..., None]], click.Command]:
    """The options of ``dead redrive`` and ``dead purge``: ids or a queue, where to send."""

    def decorate(command: Callable[..., None]) -> click.Command:
        for option in (
            with_target,
            json_option,
            broker_options,
            storage_options,
            click.option(
                "--queue",
                callback=parse_queue,
                metavar="NAME",
                help="every dead letter of this queue (instead of IDS)",
            ),
            click.argument("job_ids", metavar="[IDS]...", nargs=-1, callback=parse_job_id),
        ):
            command = option(command)
        return click.command(name)(command)

    return decorate


async def _redrive(worker: Worker, job_ids: tuple[str, ...], queue: str | None) -> list[str]:
    return await worker.redrive(job_ids, queue=queue)


async def _purge(worker: Worker, job_ids: tuple[str, ...], queue: str | None) -> list[str]:
    return await worker.purge(job_ids, queue=queue)


def _change_dead(
    target: Target,
    job_ids: tuple[str, ...],
    queue: str | None,
    as_json: bool,
    change: Callable[[Worker, tuple[str, ...], str | None], Awaitable[list[str]]],
    verb: str,
    field: str,
) -> None:
    if bool(job_ids) == (queue is not None):
        raise click.UsageError("name the dead letters (IDS) or a --queue, not both and not neither")
    if len(job_ids) > MAX_SELECTED:
        raise click.BadParameter(
            f"{len(job_ids)} ids; at most {MAX_SELECTED} at once", param_hint="IDS"
        )
    ids = _send(target, lambda worker: change(worker, job_ids, queue))
    if as_json:
        emit_json({field: ids})
        return
    click.echo(f"{verb} {len(ids)} dead letter{'s' if len(ids) != 1 else ''}")
    for job_id in ids:
        click.echo(clean(job_id, 256))


@_dead_command("redrive")
def dead_redrive(
    target: Target, job_ids: tuple[str, ...], queue: str | None, as_json: bool
) -> None:
    """Put dead letters back to ready with fresh attempts: the IDS given, or every one
    of --queue. All or nothing.

    \b
    Examples:
      osqueue dead redrive 000000000042-3 000000000043-3 --broker 127.0.0.1:9090
      osqueue dead redrive --queue emails --data s3://bucket/queue
    """
    _change_dead(target, job_ids, queue, as_json, _redrive, "redrove", "redriven")


@_dead_command("purge")
def dead_purge(target: Target, job_ids: tuple[str, ...], queue: str | None, as_json: bool) -> None:
    """Drop dead letters from the state into the archive (status dead, so the record is
    kept): the IDS given, or every one of --queue. All or nothing.

    \b
    Examples:
      osqueue dead purge 000000000042-3 --broker 127.0.0.1:9090
      osqueue dead purge --queue emails --data s3://bucket/queue --json
    """
    _change_dead(target, job_ids, queue, as_json, _purge, "purged", "purged")
