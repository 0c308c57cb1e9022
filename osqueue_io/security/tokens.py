"""Bearer tokens: where they come from, which role each grants, and matching one.

A broker given tokens serves only calls that carry one of them (gRPC metadata
``authorization: Bearer <token>``, or the HTTP header of the same name). Each token has
a **role**, and each role allows what the one before it allows:

=========  ==========================================================================
``read``   look: Stats, GetJob, ListDead; the HTTP dashboard and metrics
``worker`` + the job RPCs: Push, PushBatch, Claim, ClaimBatch, Heartbeat, Complete,
           CompleteBatch, Fail, Release
``admin``  + Cancel, Redrive, Purge (and HTTP calls that change something): everything
=========  ==========================================================================

A ``worker`` or ``admin`` token may also be **bound** to a worker id prefix: its calls
may then claim, heartbeat, complete, fail or release only as worker ids that start with
it (:mod:`osqueue_io.security.access` checks). The RPC table is there too;
docs/security.md has the threat model.

Entries are written ``ROLE:TOKEN`` or ``ROLE:TOKEN:WORKER_PREFIX``, in a file (one per
line, ``#`` comments), on the command line, or in ``OSQUEUE_TOKENS`` (separated by
commas or white space). A token is 16 to 256 characters of ``A-Z a-z 0-9 - . _ ~ + /``
and trailing ``=`` (RFC 6750's ``b64token``): long enough that guessing is hopeless, short
enough that every header is bounded. Errors name the entry by its place (``line 3``),
never by its text: a token never reaches a log or an error message.

Matching (:meth:`Tokens.match`) hashes the presented token once and compares its
SHA-256 with every configured token's with :func:`hmac.compare_digest`, always all of
them: the time taken says nothing about which token, or how much of one, was right.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from osqueue_core import MAX_ID_LENGTH

#: The environment variable a broker reads tokens from (besides its flags).
TOKENS_ENV = "OSQUEUE_TOKENS"
#: Shortest and longest token accepted.
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 256
#: Most tokens one broker holds, and the largest token file it reads.
MAX_TOKENS = 10_000
MAX_TOKEN_FILE_BYTES = 1024 * 1024
#: RFC 6750 ``b64token``.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: The longest ``authorization`` value worth looking at: the scheme and a token.
MAX_AUTHORIZATION_LENGTH = len("Bearer ") + MAX_TOKEN_LENGTH


class TokenError(ValueError):
    """A token entry, file or variable that cannot be used; the message says where,
    and never quotes a token."""


class Role(enum.IntEnum):
    """What a token allows; a higher role allows everything a lower one does."""

    READ = 1
    WORKER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The role's name as written in token entries and docs (``read``...)."""
        return self.name.lower()


_ROLES = {role.label: role for role in Role}


@attrs.frozen
class Token:
    """One configured token: its ``role`` and, for a bound token, the prefix every
    worker id it acts as must start with (``workers``; None: any)."""

    role: Role
    secret: str = attrs.field(repr=False)
    workers: str | None = None

    def allows_worker(self, worker_id: str) -> bool:
        """Whether this token may act as ``worker_id``."""
        return self.workers is None or worker_id.startswith(self.workers)


def parse_token(entry: str, where: str = "the token entry") -> Token:
    """``ROLE:TOKEN`` or ``ROLE:TOKEN:WORKER_PREFIX`` -> a :class:`Token`; raises
    :class:`TokenError` naming ``where`` (never the token)."""
    parts = entry.split(":")
    if len(parts) not in (2, 3):
        raise TokenError(f"{where} is not ROLE:TOKEN or ROLE:TOKEN:WORKER_PREFIX")
    role = _ROLES.get(parts[0])
    if role is None:
        raise TokenError(
            f"{where} names no known role (the roles are {', '.join(_ROLES)}; "
            "each allows what the one before allows)"
        )
    secret = parts[1]
    if not MIN_TOKEN_LENGTH <= len(secret) <= MAX_TOKEN_LENGTH:
        raise TokenError(
            f"{where}: a token must be {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters "
            f"long (this one has {len(secret)}); make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if not _TOKEN.fullmatch(secret):
        raise TokenError(f"{where}: a token may hold only A-Z a-z 0-9 - . _ ~ + / and a final =")
    workers = None
    if len(parts) == 3:
        workers = parts[2]
        if role is Role.READ:
            raise TokenError(f"{where}: a read token claims no jobs, so it binds no worker ids")
        if not workers or len(workers) > MAX_ID_LENGTH or not workers.isprintable():
            raise TokenError(
                f"{where}: the worker id prefix must be 1 to {MAX_ID_LENGTH} printable characters"
            )
    return Token(role, secret, workers)


def parse_token_file(text: str, name: str) -> list[Token]:
    """The tokens of a token file's ``text``: one entry a line, blank lines and lines
    starting with ``#`` skipped, white space around an entry ignored."""
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            tokens.append(parse_token(entry, f"{name}, line {number}"))
    return tokens


def read_token_file(path: str | os.PathLike[str]) -> tuple[list[Token], bool]:
    """The tokens in the file at ``path``, and whether other users may read it (worth
    a warning: every token in it is a key to the broker)."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as error:
        raise TokenError(f"cannot read the token file {str(file)!r}: {error.strerror}") from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise TokenError(f"the token file {str(file)!r} is over {MAX_TOKEN_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError(f"the token file {str(file)!r} is not UTF-8 text") from None
    exposed = bool(mode & (stat.S_IRGRP | stat.S_IROTH))
    return parse_token_file(text, f"the token file {str(file)!r}"), exposed


def parse_token_env(value: str) -> list[Token]:
    """The tokens in ``OSQUEUE_TOKENS``: entries separated by commas or white space."""
    entries = [entry for entry in re.split(r"[\s,]+", value) if entry]
    return [
        parse_token(entry, f"{TOKENS_ENV} entry {number}")
        for number, entry in enumerate(entries, 1)
    ]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``authorization`` value ``Bearer <token>`` (the scheme in any
    case), or None when there is none or it is malformed or over-long."""
    if authorization is None or len(authorization) > MAX_AUTHORIZATION_LENGTH:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def sendable_token(token: object) -> bool:
    """Whether a client may send ``token``: 1 to ``MAX_TOKEN_LENGTH`` printable ASCII
    characters without spaces (what a header value can carry, and no more)."""
    return (
        isinstance(token, str)
        and 0 < len(token) <= MAX_TOKEN_LENGTH
        and token.isascii()
        and token.isprintable()
        and " " not in token
    )


class Tokens:
    """The tokens a broker accepts (empty: authentication is off)."""

    def __init__(self, tokens: Iterable[Token] = ()) -> None:
        given = list(tokens)
        if len(given) > MAX_TOKENS:
            raise TokenError(f"{len(given)} tokens given; at most {MAX_TOKENS}")
        by_secret: dict[str, Token] = {}
        for number, token in enumerate(given, 1):
            other = by_secret.setdefault(token.secret, token)
            if other != token:
                raise TokenError(
                    f"token {number} is given twice, with different roles or prefixes: "
                    "a token must mean one thing"
                )
        self._digests = [(_digest(token.secret), token) for token in by_secret.values()]

    @classmethod
    def load(
        cls,
        entries: Sequence[str] = (),
        files: Sequence[str | os.PathLike[str]] = (),
        env: str | None = None,
    ) -> tuple[Tokens, list[str]]:
        """Tokens from command-line ``entries``, token ``files`` and an
        ``OSQUEUE_TOKENS`` value ``env``; with warnings to log (a file others may read).
        Raises :class:`TokenError` for anything unusable."""
        tokens = [
            parse_token(entry, f"token entry {number}") for number, entry in enumerate(entries, 1)
        ]
        warnings = []
        for path in files:
            found, exposed = read_token_file(path)
            tokens.extend(found)
            if exposed:
                warnings.append(
                    f"the token file {str(path)!r} may be read by other users: "
                    f"chmod 600 {str(path)!r}"
                )
        if env:
            tokens.extend(parse_token_env(env))
        return cls(tokens), warnings

    @property
    def enabled(self) -> bool:
        """Whether calls need a token at all."""
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def match(self, presented: str | None) -> Token | None:
        """The configured token equal to ``presented``, or None. Compares against every
        token in constant time (see the module docstring)."""
        if presented is None or len(presented) > MAX_TOKEN_LENGTH:
            return None
        digest = _digest(presented)
        found = None
        for known, token in self._digests:
            # No early exit: every comparison runs, whichever matched.
            if hmac.compare_digest(known, digest):
                found = token
        return found


def _digest(secret: str) -> bytes:
    # Comparing digests makes every comparison the same length, so the time does not
    # even reveal a token's length.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
