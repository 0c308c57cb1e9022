"""Who may make which gRPC call: the role each RPC needs, and worker-bound tokens.

:class:`Access` is asked about every call before its request is read
(:meth:`Access.authorize`: the ``authorization`` metadata against the broker's
:class:`~osqueue_io.security.tokens.Tokens` and :data:`RPC_ROLES`) and, for a bound
token, once it is read (:meth:`Access.check_workers`: every worker id the request names
must start with the token's prefix). A refusal is a typed error (``Unauthenticated`` or
``PermissionDenied``) raised before the call reaches the broker, so a refused call
changes nothing. Health checks (:data:`PUBLIC`) need no token: load balancers and
orchestrators cannot send one, and they learn only SERVING or NOT_SERVING.

Refusals are logged without the token, at most one warning a minute (with the count
since the last one) so a flood of bad calls cannot flood the log; each one at debug.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from multidict import MultiMapping

from osqueue_core import PermissionDenied, Unauthenticated
from osqueue_core.quoting import quote
from osqueue_io.security.tokens import Role, Token, Tokens, bearer_token

log = logging.getLogger("osqueue.security")

_QUEUE = "/osqueue.v1.QueueService/"

#: The role each RPC of ``osqueue.v1.QueueService`` needs (by method path). An RPC
#: missing here needs ``admin``: a new RPC is closed until someone decides.
RPC_ROLES: dict[str, Role] = {
    **{_QUEUE + name: Role.READ for name in ("Stats", "GetJob", "ListDead")},
    **{
        _QUEUE + name: Role.WORKER
        for name in (
            "Push",
            "PushBatch",
            "Claim",
            "ClaimBatch",
            "Heartbeat",
            "Complete",
            "CompleteBatch",
            "Fail",
            "Release",
        )
    },
    **{_QUEUE + name: Role.ADMIN for name in ("Cancel", "Redrive", "Purge")},
}

#: Calls served without a token.
PUBLIC = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


def _one(message: Any) -> Iterable[str]:
    return (message.worker_id,)


def _items(message: Any) -> Iterable[str]:
    return (item.worker_id for item in message.items)


#: The worker ids a request acts as, for the RPCs that name any.
WORKER_IDS: dict[str, Callable[[Any], Iterable[str]]] = {
    **{
        _QUEUE + name: _one
        for name in ("Claim", "ClaimBatch", "Heartbeat", "Complete", "Fail", "Release")
    },
    _QUEUE + "CompleteBatch": _items,
}

#: Seconds between two warnings about refused calls.
REFUSAL_LOG_INTERVAL = 60.0


def _rpc(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _peer(peer: object) -> str:
    """A grpclib ``Peer`` as ``host:port`` (for logs)."""
    addr = getattr(peer, "addr", None)
    address = addr() if callable(addr) else None
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "a client"


class Access:
    """Checks calls against ``tokens`` (see the module docstring). With no tokens every
    call is allowed and nothing is checked."""

    def __init__(self, tokens: Tokens, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.tokens = tokens
        self._clock = clock
        self._refused = 0
        self._warned_at: float | None = None

    @property
    def enabled(self) -> bool:
        return self.tokens.enabled

    def authorize(
        self, path: str, metadata: MultiMapping[str | bytes] | None, peer: object = None
    ) -> Token | None:
        """The token the call at ``path`` (with request ``metadata``, from ``peer``) may
        proceed with (None: no check needed); raises ``Unauthenticated`` (no valid
        token) or ``PermissionDenied`` (its role does not allow ``path``)."""
        if not self.tokens.enabled or path in PUBLIC:
            return None
        values = metadata.getall("authorization", []) if metadata is not None else []
        token = None
        if len(values) == 1 and isinstance(values[0], str):
            token = self.tokens.match(bearer_token(values[0]))
        if token is None:
            reason = "no token" if not values else "a token it does not know"
            self._refused_call(path, peer, reason)
            raise Unauthenticated(
                f"{_rpc(path)} needs a bearer token and the call carried {reason}: give the "
                "client its token (token=..., or the authorization: Bearer metadata)"
            )
        needed = RPC_ROLES.get(path, Role.ADMIN)
        if token.role < needed:
            self._refused_call(path, peer, f"a {token.role.label} token")
            raise PermissionDenied(
                f"{_rpc(path)} needs a token with the {needed.label} role; this call's token "
                f"has the {token.role.label} role (docs/security.md)"
            )
        return token

    def check_workers(self, token: Token | None, path: str, message: object) -> None:
        """Raise ``PermissionDenied`` unless ``token`` may act as every worker id the
        request ``message`` to ``path`` names."""
        if token is None or token.workers is None:
            return
        names = WORKER_IDS.get(path)
        if names is None:
            return
        for worker_id in names(message):
            if not token.allows_worker(worker_id):
                self._refused_call(path, None, "a worker id outside its token's prefix")
                raise PermissionDenied(
                    f"{_rpc(path)}: this call's token may act only as worker ids starting "
                    f"with {quote(token.workers)}, and the request names another"
                )

    def _refused_call(self, path: str, peer: object, reason: str) -> None:
        self._refused += 1
        where = _peer(peer)
        log.debug("refused %s from %s: %s", _rpc(path), where, reason)
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= REFUSAL_LOG_INTERVAL:
            log.warning(
                "refused %d call(s) for want of a valid token or role; the last: %s "
                "from %s with %s",
                self._refused,
                _rpc(path),
                where,
                reason,
                extra={"refused": self._refused},
            )
            self._refused = 0
            self._warned_at = now
