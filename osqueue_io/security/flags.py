"""The security flags of osqueue's command lines, shared by the broker and the clients.

Broker (:func:`add_server_flags`, :func:`server_security`): ``--tls-cert`` and
``--tls-key`` (TLS on its listeners), ``--token-file`` and ``--token`` (repeatable),
plus the ``OSQUEUE_TOKENS`` environment variable. Client (:func:`add_client_flags`,
:func:`client_security`): ``--tls-ca`` (and ``--tls`` for the system's roots),
``--token-file`` or ``--token``, else ``OSQUEUE_TOKEN``. Token values are parsed here,
not by argparse, whose errors would quote them.
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping
from pathlib import Path

import attrs

from osqueue_io.security.tls import client_context, server_context
from osqueue_io.security.tokens import (
    MAX_TOKEN_LENGTH,
    TOKENS_ENV,
    TokenError,
    Tokens,
    sendable_token,
)

#: The environment variable a client reads its token from.
TOKEN_ENV = "OSQUEUE_TOKEN"


@attrs.frozen
class ServerSecurity:
    """What the broker's flags asked for: TLS contexts (gRPC's offers ``h2`` by ALPN;
    the HTTP listeners' offers nothing, so browsers and curl speak HTTP/1.1 to them),
    the tokens, and warnings to log (a token file others may read, tokens given on the
    command line)."""

    ssl_context: ssl.SSLContext | None
    tokens: Tokens
    warnings: tuple[str, ...] = ()
    http_ssl_context: ssl.SSLContext | None = None


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The broker's ``--tls-cert``, ``--tls-key``, ``--token-file`` and ``--token``."""
    group = parser.add_argument_group("security (docs/security.md)")
    group.add_argument(
        "--tls-cert",
        metavar="PATH",
        help="serve over TLS with this certificate chain (PEM, the broker's certificate "
        "first); needs --tls-key",
    )
    group.add_argument(
        "--tls-key",
        metavar="PATH",
        help="the unencrypted private key (PEM) of --tls-cert; readable by the broker alone",
    )
    group.add_argument(
        "--token-file",
        action="append",
        default=[],
        metavar="PATH",
        help="require bearer tokens: one ROLE:TOKEN (or ROLE:TOKEN:WORKER_PREFIX) a line, "
        "roles read, worker, admin; # starts a comment. Repeatable; tokens from "
        f"--token and ${TOKENS_ENV} (comma-separated) are added",
    )
    group.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="ROLE:TOKEN",
        help="one more token, as in --token-file; repeatable. Visible to every user of "
        "this machine in the process list: prefer --token-file",
    )


def server_security(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> ServerSecurity:
    """The TLS context and tokens the broker's flags (and ``OSQUEUE_TOKENS``) name.
    Raises ``ValueError`` (a :class:`~osqueue_io.security.tls.TlsConfigError` or
    :class:`~osqueue_io.security.tokens.TokenError`) with a message fit for the user."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together: give both or neither")
    context = http_context = None
    if args.tls_cert is not None:
        context = server_context(args.tls_cert, args.tls_key)
        # aiohttp speaks HTTP/1.1 alone: a listener offering h2 would be picked for
        # HTTP/2 by every browser and curl, and answer their first frame with a 400.
        http_context = server_context(args.tls_cert, args.tls_key, alpn=None)
    tokens, warnings = Tokens.load(args.token, args.token_file, environ.get(TOKENS_ENV))
    if args.token:
        warnings.append(
            "tokens given with --token are visible in the process list: prefer --token-file"
        )
    return ServerSecurity(context, tokens, tuple(warnings), http_context)


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """A client's ``--tls-ca``, ``--tls``, ``--token-file`` and ``--token``."""
    group = parser.add_argument_group("security (docs/security.md)")
    group.add_argument(
        "--tls-ca",
        metavar="PATH",
        help="connect over TLS, trusting the CA certificates in this PEM file",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        help="connect over TLS, trusting the system's CA certificates",
    )
    group.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"the bearer token to send, read from this file (default: ${TOKEN_ENV})",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        help="the bearer token to send; visible in the process list: prefer --token-file "
        f"or ${TOKEN_ENV}",
    )


@attrs.frozen
class ClientSecurity:
    """What a client's flags asked for: its TLS context and its token (None: none)."""

    ssl_context: ssl.SSLContext | None = None
    token: str | None = attrs.field(default=None, repr=False)


def client_security(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> ClientSecurity:
    """The TLS context and token a client's flags (or ``OSQUEUE_TOKEN``) name; raises
    ``ValueError`` with a message fit for the user."""
    context = None
    if args.tls_ca is not None:
        context = client_context(args.tls_ca)
    elif args.tls:
        context = client_context()
    if args.token_file is not None and args.token is not None:
        raise ValueError("give --token-file or --token, not both")
    token = args.token
    if args.token_file is not None:
        try:
            with Path(args.token_file).open("rb") as handle:
                raw = handle.read(MAX_TOKEN_LENGTH + 64)
        except OSError as error:
            raise TokenError(
                f"cannot read the token file {args.token_file!r}: {error.strerror}"
            ) from None
        token = raw.decode("utf-8", "replace").strip()
    elif token is None:
        token = environ.get(TOKEN_ENV) or None
    if token is not None and not sendable_token(token):
        raise TokenError(
            f"the token must be 1 to {MAX_TOKEN_LENGTH} printable ASCII characters without spaces"
        )
    return ClientSecurity(context, token)
