"""The options commands share, what they check, and how a command runs its I/O.

``--data URL`` (``$OSQUEUE_DATA``) names the storage; ``--state-key`` and
``--archive-prefix`` default to the broker's (``BrokerConfig``); ``--broker HOST:PORT``
(``$OSQUEUE_BROKER``) names the owner for changes, and ``--tls-ca``, ``--tls``,
``--token-file`` and ``--token`` (``$OSQUEUE_TOKEN``) how to reach a secured one, as for
the worker runner; ``--json`` asks for machine output.
Every value is checked here, before anything is read, and a bad one is a usage error
(exit 2) that says what to write instead and never repeats more than a few dozen
characters of it.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import attrs
import click

from osqueue_core import (
    BrokerConfig,
    BrokerNotRunning,
    InvalidArgument,
    OsqueueError,
    Unauthenticated,
    check_id,
    check_queue_name,
    quote,
)
from osqueue_io.address import split_host_port
from osqueue_io.cli.exits import EXIT_USAGE, CliError, exit_code_of
from osqueue_io.cli.times import BadTime, parse_time
from osqueue_io.security.flags import TOKEN_ENV, ClientSecurity, client_security
from osqueue_io.storage import InvalidKey, ObjectStore, StorageConfigError, open_store
from osqueue_io.storage.keys import check_key, check_prefix

__all__ = [
    "MAX_LIMIT",
    "Target",
    "broker_options",
    "json_option",
    "limit_option",
    "run_change",
    "run_io",
    "storage_options",
    "until_option",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_DEFAULTS = BrokerConfig()
#: The longest --data URL accepted.
MAX_URL_LENGTH = 4096
#: The most jobs one listing shows (``--limit``), and the default.
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
#: The longest a change may wait for the owning broker, failovers included.
MAX_TIMEOUT = 600.0


@attrs.frozen
class Target:
    """Where a command reads (``data`` and its keys) and sends changes (``broker``)."""

    data: str | None
    state_key: str = _DEFAULTS.state_key
    archive_prefix: str = _DEFAULTS.archive_prefix
    broker: str | None = None
    timeout: float = 15.0
    #: TLS and the token for the broker (none by default).
    security: ClientSecurity = attrs.field(factory=ClientSecurity)

    def open(self) -> ObjectStore:
        """Open the storage (reads never create anything: a local directory must exist)."""
        if self.data is None:
            raise click.UsageError("give --data URL (or set OSQUEUE_DATA): where the queue lives")
        return open_data(self.data)


def open_data(url: str) -> ObjectStore:
    """The store at ``url``, opened for reading (usage errors for a bad URL)."""
    if url.startswith("memory:"):
        raise click.BadParameter(
            "memory:// lives inside one process: name the storage a broker uses "
            "(a directory, s3://, gs://, az://)",
            param_hint="--data",
        )
    local = "://" not in url or url.startswith("file:")
    try:
        return open_store(url, create_root=False) if local else open_store(url)
    except StorageConfigError as error:
        raise click.BadParameter(str(error), param_hint="--data") from None


def _data(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not 0 < len(value) <= MAX_URL_LENGTH:
        raise click.BadParameter(f"must be 1 to {MAX_URL_LENGTH} characters long")
    return value


def _key(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_key(value)
    except InvalidKey as error:
        raise click.BadParameter(str(error)) from None


def _prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        stripped = check_prefix(value)
    except InvalidKey as error:
        raise click.BadParameter(str(error)) from None
    if not stripped:
        raise click.BadParameter("must not be empty")
    return stripped + "/"


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """``value`` if it is a number: ``click.FloatRange`` lets ``nan`` through."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds")
    return value


def _broker(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    parsed = split_host_port(value) if len(value) <= 300 else None
    if parsed is None or not parsed[0]:
        raise click.BadParameter(
            f"{quote(value)} is not HOST:PORT: use e.g. 127.0.0.1:9090 or broker.internal:9090"
        )
    return value.strip()


def parse_job_id(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> Any:
    """A job id (or a tuple of them), checked like the broker checks one."""
    try:
        if isinstance(value, tuple):
            return tuple(check_id("job id", item) for item in value)
        return None if value is None else check_id("job id", value)
    except InvalidArgument as error:
        raise click.BadParameter(str(error)) from None


def parse_queue(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> Any:
    """A queue name under the broker's rules, or None."""
    try:
        return None if value is None else check_queue_name(value)
    except InvalidArgument as error:
        raise click.BadParameter(str(error)) from None


def parse_when(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A time: ISO 8601, a span ago (``1h``) or ``now``, as UNIX seconds."""
    if value is None:
        return None
    try:
        return parse_time(value, time.time())
    except BadTime as error:
        raise click.BadParameter(str(error)) from None


def until_option(help: str) -> Callable[[F], F]:
    """``--until TIME``, by default now."""
    return click.option(
        "--until",
        callback=parse_when,
        default="now",
        show_default=True,
        metavar="TIME",
        help=help,
    )


def storage_options(command: F) -> F:
    """``--data``, ``--state-key``, ``--archive-prefix``. (Segments need no prefix: the
    state's references name their keys.)"""
    for option in reversed(
        [
            click.option(
                "--data",
                envvar="OSQUEUE_DATA",
                metavar="URL",
                callback=_data,
                help="where the queue lives, as the broker's --data: a directory, "
                "file:///dir, s3://bucket/prefix, gs://..., az://... (credentials and "
                "endpoints from the usual environment variables) [env: OSQUEUE_DATA]",
            ),
            click.option(
                "--state-key",
                default=_DEFAULTS.state_key,
                show_default=True,
                callback=_key,
                metavar="KEY",
                help="the state object's key under --data",
            ),
            click.option(
                "--archive-prefix",
                default=_DEFAULTS.archive_prefix,
                show_default=True,
                callback=_prefix,
                metavar="PREFIX",
                help="where archive objects live under --data",
            ),
        ]
    ):
        command = option(command)
    return command


def broker_options(command: F) -> F:
    """``--broker``, ``--timeout``, and the security options of a client (besides the
    storage options, for discovery)."""
    for option in reversed(
        [
            click.option(
                "--tls-ca",
                metavar="PATH",
                help="connect to the broker over TLS, trusting the CA certificates in "
                "this PEM file",
            ),
            click.option(
                "--tls",
                is_flag=True,
                help="connect to the broker over TLS, trusting the system's CA certificates",
            ),
            click.option(
                "--token-file",
                metavar="PATH",
                help="the bearer token to send (changes need an admin token), read "
                f"from this file; without it, --token or ${TOKEN_ENV}",
            ),
            click.option(
                "--token",
                metavar="TOKEN",
                help="the bearer token to send; visible in the process list: prefer "
                f"--token-file or ${TOKEN_ENV}",
            ),
        ]
    ):
        command = option(command)
    command = click.option(
        "--timeout",
        type=click.FloatRange(0.1, MAX_TIMEOUT),
        callback=_finite,
        default=15.0,
        show_default=True,
        metavar="SECONDS",
        help="how long to try to reach the owning broker, following a failover",
    )(command)
    return click.option(
        "--broker",
        envvar="OSQUEUE_BROKER",
        metavar="HOST:PORT",
        callback=_broker,
        help="the broker that owns the queue; without it, the owner is found in the "
        "state object at --data [env: OSQUEUE_BROKER]",
    )(command)


def json_option(command: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="print JSON for programs (fields in docs/operations.md) instead of tables",
    )(command)


def limit_option(default: int = DEFAULT_LIMIT, highest: int = MAX_LIMIT) -> Callable[[F], F]:
    return click.option(
        "--limit",
        type=click.IntRange(1, highest),
        default=default,
        show_default=True,
        metavar="N",
        help=f"show at most N jobs (1 to {highest:,})",
    )


def target_of(options: dict[str, Any]) -> Target:
    """The :class:`Target` named by a command's storage and broker options."""
    return Target(
        data=options.pop("data"),
        state_key=options.pop("state_key"),
        archive_prefix=options.pop("archive_prefix"),
        broker=options.pop("broker", None),
        timeout=options.pop("timeout", 15.0),
        security=_security_of(options),
    )


def _security_of(options: dict[str, Any]) -> ClientSecurity:
    """The TLS context and token the security options (or ``$OSQUEUE_TOKEN``) name,
    checked as the worker runner checks its own flags: a usage error if unusable."""
    names = ("tls_ca", "tls", "token_file", "token")
    if not any(name in options for name in names):
        return ClientSecurity()  # a command that reads storage only
    flags = argparse.Namespace(**{name: options.pop(name) for name in names})
    try:
        return client_security(flags)
    except ValueError as error:  # a CA or token file that cannot be used
        raise CliError(str(error), EXIT_USAGE) from None


def run_io(target: Target, work: Callable[[ObjectStore], Awaitable[T]]) -> T:
    """Run ``work`` on the opened storage on an asyncio loop (obstore and grpclib need
    one), closing the store after."""

    async def run() -> T:
        store = target.open()
        try:
            return await work(store)
        finally:
            await store.aclose()

    return anyio.run(run, backend="asyncio")


def run_change(target: Target, work: Callable[[ObjectStore | None], Awaitable[T]]) -> T:
    """Like :func:`run_io` for a change: the storage is opened only when it is needed
    to find the owner (no ``--broker``) and given."""

    async def run() -> T:
        store = target.open() if target.broker is None and target.data is not None else None
        try:
            return await work(store)
        finally:
            if store is not None:
                await store.aclose()

    return anyio.run(run, backend="asyncio")


def with_target(command: Callable[..., T]) -> Callable[..., T]:
    """Hand ``command`` a :class:`Target` (as ``target``) instead of the separate
    storage and broker options."""

    @functools.wraps(command)
    def wrapper(**options: Any) -> T:
        # The command's name is known only while its context is current: errors carry
        # it out for the one-line message.
        path = click.get_current_context().command_path
        target = None
        try:
            target = target_of(options)
            return command(target=target, **options)
        except CliError as error:
            error.command = error.command or path
            raise
        except OsqueueError as error:
            message = str(error) + _flag_hint(error, target)
            raise CliError(message, exit_code_of(error), path) from error

    return wrapper


def _flag_hint(error: OsqueueError, target: Target | None) -> str:
    """The options of this command that answer ``error``, whose message names the
    Python client's arguments (``token=``, ``tls_ca=``)."""
    if isinstance(error, Unauthenticated):
        return f"; osqueue sends one with --token-file PATH (or ${TOKEN_ENV})"
    plaintext = target is not None and target.security.ssl_context is None
    if isinstance(error, BrokerNotRunning) and plaintext:
        return "; osqueue speaks TLS with --tls-ca PATH"
    return ""
