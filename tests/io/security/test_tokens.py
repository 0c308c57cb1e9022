"""Token entries, files and variables; matching; the role each call needs."""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path

import pytest
from multidict import MultiDict

from osqueue_core import PermissionDenied, Unauthenticated
from osqueue_io.security import Access, Role, Token, TokenError, Tokens, bearer_token, parse_token
from osqueue_io.security.access import REFUSAL_LOG_INTERVAL
from osqueue_io.security.tokens import (
    MAX_TOKEN_FILE_BYTES,
    MAX_TOKENS,
    parse_token_env,
    read_token_file,
)

# Fixed, not drawn: parametrized test names hold them, and every pytest-xdist worker
# must collect the same names. Nothing here needs them to be secret.
SECRET = "tok-" + hashlib.sha256(b"osqueue tests SECRET").hexdigest()[:28]
OTHER = "tok-" + hashlib.sha256(b"osqueue tests OTHER").hexdigest()[:28]


def test_an_entry_names_a_role_a_token_and_maybe_a_worker_prefix() -> None:
    assert parse_token(f"read:{SECRET}") == Token(Role.READ, SECRET)
    assert parse_token(f"admin:{SECRET}") == Token(Role.ADMIN, SECRET)
    assert parse_token(f"worker:{SECRET}:build-") == Token(Role.WORKER, SECRET, "build-")
    assert SECRET not in repr(parse_token(f"worker:{SECRET}"))
    assert Role.READ < Role.WORKER < Role.ADMIN


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (SECRET, "is not ROLE:TOKEN"),
        (f"root:{SECRET}", "names no known role"),
        (f"Admin:{SECRET}", "names no known role"),
        ("admin:short", "16 to 256 characters"),
        ("admin:" + "a" * 257, "16 to 256 characters"),
        (f"admin:{SECRET}!", "may hold only"),
        (f"admin:{SECRET} x", "may hold only"),
        (f"admin:=={SECRET}", "may hold only"),
        (f"read:{SECRET}:build-", "a read token claims no jobs"),
        (f"worker:{SECRET}:", "the worker id prefix must be"),
        (f"worker:{SECRET}:" + "p" * 257, "the worker id prefix must be"),
        (f"worker:{SECRET}:a:b", "is not ROLE:TOKEN"),
    ],
)
def test_a_bad_entry_is_refused_without_quoting_it(entry: str, message: str) -> None:
    with pytest.raises(TokenError, match=message) as refused:
        parse_token(entry, "entry 1")
    assert str(refused.value).startswith("entry 1")
    assert SECRET not in str(refused.value)


def test_a_token_file_has_one_entry_a_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# the roles\n\nread:{SECRET}\n   admin:{OTHER}  \n")
    path.chmod(0o600)
    tokens, exposed = read_token_file(path)
    assert tokens == [Token(Role.READ, SECRET), Token(Role.ADMIN, OTHER)]
    assert not exposed
    path.chmod(0o644)
    assert read_token_file(path)[1], "others may read it: worth a warning"
    path.write_text(f"read:{SECRET}\nread:{SECRET}x!\n")
    with pytest.raises(TokenError, match=r"line 2: a token may hold only") as refused:
        read_token_file(path)
    assert SECRET not in str(refused.value)


def test_a_token_file_is_bounded_and_must_exist(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot read the token file"):
        read_token_file(tmp_path / "missing")
    big = tmp_path / "big"
    big.write_bytes(b"#" * (MAX_TOKEN_FILE_BYTES + 1))
    with pytest.raises(TokenError, match="is over"):
        read_token_file(big)
    binary = tmp_path / "binary"
    binary.write_bytes(b"read:\xff\xfe")
    with pytest.raises(TokenError, match="not UTF-8"):
        read_token_file(binary)


def test_the_environment_separates_entries_by_commas_or_space() -> None:
    tokens = parse_token_env(f" read:{SECRET},admin:{OTHER}\nworker:{SECRET}x:w- ,")
    assert [token.role for token in tokens] == [Role.READ, Role.ADMIN, Role.WORKER]
    with pytest.raises(TokenError, match="OSQUEUE_TOKENS entry 2"):
        parse_token_env(f"read:{SECRET},oops")


def test_load_gathers_every_source_and_warns(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"admin:{OTHER}\n")
    path.chmod(0o640)
    tokens, warnings = Tokens.load([f"read:{SECRET}"], [path], f"worker:{SECRET}z")
    assert len(tokens) == 3
    assert tokens.enabled
    assert [w for w in warnings if "chmod 600" in w]
    assert not Tokens().enabled


def test_a_token_means_one_thing() -> None:
    Tokens([Token(Role.READ, SECRET), Token(Role.READ, SECRET)])  # the same twice: fine
    with pytest.raises(TokenError, match="given twice") as refused:
        Tokens([Token(Role.READ, SECRET), Token(Role.ADMIN, SECRET)])
    assert SECRET not in str(refused.value)
    many = [Token(Role.READ, f"{n:020d}") for n in range(MAX_TOKENS + 1)]
    with pytest.raises(TokenError, match="at most"):
        Tokens(many)


def test_matching_finds_the_token_or_nothing() -> None:
    read, admin = Token(Role.READ, SECRET), Token(Role.ADMIN, OTHER)
    tokens = Tokens([read, admin])
    assert tokens.match(SECRET) == read
    assert tokens.match(OTHER) == admin
    for wrong in (None, "", SECRET[:-1], SECRET + "x", SECRET.upper(), "x" * 10_000):
        assert tokens.match(wrong) is None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (f"Bearer {SECRET}", SECRET),
        (f"bearer {SECRET}", SECRET),
        (f"BEARER   {SECRET} ", SECRET),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        (f"Basic {SECRET}", None),
        (SECRET, None),
        ("Bearer " + "x" * 300, None),
    ],
)
def test_the_authorization_value_is_a_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


# -- the role each call needs -------------------------------------------------------


QUEUE = "/osqueue.v1.QueueService/"


def metadata(token: str | None) -> MultiDict[str | bytes]:
    return MultiDict({} if token is None else {"authorization": f"Bearer {token}"})


def test_access_without_tokens_checks_nothing() -> None:
    access = Access(Tokens())
    assert access.authorize(QUEUE + "Purge", metadata(None)) is None


def test_access_asks_for_the_role_each_call_needs() -> None:
    reader, worker, admin = (secrets.token_urlsafe(24) for _ in range(3))
    access = Access(
        Tokens([Token(Role.READ, reader), Token(Role.WORKER, worker), Token(Role.ADMIN, admin)])
    )
    for path in ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"):
        assert access.authorize(path, metadata(None)) is None
    with pytest.raises(Unauthenticated):
        access.authorize(QUEUE + "Stats", metadata(None))
    assert access.authorize(QUEUE + "Stats", metadata(reader)) is not None
    with pytest.raises(PermissionDenied, match="needs a token with the worker role"):
        access.authorize(QUEUE + "Push", metadata(reader))
    assert access.authorize(QUEUE + "Push", metadata(worker)) is not None
    with pytest.raises(PermissionDenied, match="admin role"):
        access.authorize(QUEUE + "Redrive", metadata(worker))
    assert access.authorize(QUEUE + "Redrive", metadata(admin)) is not None
    # A call nobody classified (a newer RPC) needs admin.
    with pytest.raises(PermissionDenied, match="admin role"):
        access.authorize(QUEUE + "SomethingNew", metadata(worker))


def test_refusals_are_logged_once_a_minute_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    access = Access(Tokens([Token(Role.READ, SECRET)]), clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, "osqueue.security")
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            access.authorize(QUEUE + "Stats", metadata(OTHER))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    now[0] += REFUSAL_LOG_INTERVAL
    with pytest.raises(PermissionDenied):
        access.authorize(QUEUE + "Purge", metadata(SECRET))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "refused 5 call(s)" in warnings[1].getMessage()
    assert SECRET not in caplog.text
    assert OTHER not in caplog.text
