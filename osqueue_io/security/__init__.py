"""Securing a broker: TLS, bearer tokens with roles, and who may make which call.

Files, one concept each: ``tls`` (server and client TLS contexts, checked at startup),
``tokens`` (token entries, roles, constant-time matching), ``access`` (the role each
gRPC call needs, worker-bound tokens), ``http`` (the same tokens as an aiohttp
middleware; imported on its own, so that aiohttp is needed only by HTTP listeners).
The threat model is docs/security.md.
"""

from osqueue_io.security.access import PUBLIC, RPC_ROLES, Access
from osqueue_io.security.tls import TlsConfigError, client_context, server_context
from osqueue_io.security.tokens import (
    TOKENS_ENV,
    Role,
    Token,
    TokenError,
    Tokens,
    bearer_token,
    parse_token,
)

__all__ = [
    "PUBLIC",
    "RPC_ROLES",
    "TOKENS_ENV",
    "Access",
    "Role",
    "TlsConfigError",
    "Token",
    "TokenError",
    "Tokens",
    "bearer_token",
    "client_context",
    "parse_token",
    "server_context",
]
