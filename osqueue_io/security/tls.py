"""TLS contexts for the broker's listeners and for its clients.

The broker (``--tls-cert``, ``--tls-key``) serves gRPC over TLS with
:func:`server_context`; its HTTP listeners take a context from the same function
(``alpn=None``: HTTP/1.1). A client (``tls_ca=``, ``--tls-ca``) verifies the broker
against a CA bundle with :func:`client_context` (no bundle: the system's roots), and
checks that the certificate names the host it dialled.

Both refuse TLS before 1.2. gRPC needs HTTP/2, so the gRPC contexts offer ``h2`` by
ALPN. Files are checked when the context is made, so a broker with a missing, unreadable
or mismatched certificate stops at startup with a :class:`TlsConfigError` that says
which file and why, instead of failing every handshake later.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from pathlib import Path

#: What gRPC speaks over TLS.
GRPC_ALPN = ("h2",)
#: The largest certificate or key file read.
MAX_PEM_BYTES = 1024 * 1024


class TlsConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; the message says which and
    why."""


def _check_pem(path: str | os.PathLike[str], what: str) -> str:
    """``path`` as a string, once it is a readable PEM file of sane size."""
    name = os.fspath(path)
    try:
        with Path(name).open("rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as error:
        raise TlsConfigError(f"cannot read the {what} {name!r}: {error.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise TlsConfigError(f"the {what} {name!r} is over {MAX_PEM_BYTES} bytes")
    if b"-----BEGIN " not in data:
        raise TlsConfigError(f"the {what} {name!r} is not PEM (no -----BEGIN line)")
    return name


def server_context(
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str],
    *,
    alpn: Sequence[str] | None = GRPC_ALPN,
) -> ssl.SSLContext:
    """A server context presenting the certificate chain in ``cert_file`` (PEM, the
    server's certificate first) with the private key in ``key_file`` (PEM, not
    encrypted). ``alpn``: the protocols offered (``h2`` for gRPC; None for HTTP/1.1).
    Raises :class:`TlsConfigError` when the files are missing, not PEM, or do not
    belong together."""
    cert = _check_pem(cert_file, "TLS certificate")
    key = _check_pem(key_file, "TLS key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # A password callback that refuses: an encrypted key fails here instead of
        # prompting on the terminal of a service.
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as error:
        raise TlsConfigError(
            f"the TLS certificate {cert!r} and key {key!r} cannot be used together: "
            f"{error.reason or error} (is the key for this certificate, unencrypted, and "
            "the certificate first in its file?)"
        ) from None
    except TypeError:
        raise TlsConfigError(
            f"the TLS key {key!r} is encrypted: give the broker an unencrypted key "
            "(readable by it alone)"
        ) from None
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def client_context(
    ca_file: str | os.PathLike[str] | None = None,
    *,
    alpn: Sequence[str] | None = GRPC_ALPN,
) -> ssl.SSLContext:
    """A client context that trusts the CA certificates in ``ca_file`` (PEM; None: the
    system's roots) and checks the server's host name. ``alpn`` as for
    :func:`server_context`. Raises :class:`TlsConfigError` for an unusable file."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        ca = _check_pem(ca_file, "CA bundle")
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as error:
            raise TlsConfigError(
                f"the CA bundle {ca!r} holds no usable certificate: {error.reason or error}"
            ) from None
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def _no_password() -> str:
    raise TypeError("encrypted key")
