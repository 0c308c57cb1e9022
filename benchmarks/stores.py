"""Where a benchmark's queue lives: ``memory``, ``local`` (our file backend, with its
fsyncs) or ``s3`` (moto's S3 server, in this process, on 127.0.0.1).

:class:`Stores` hands out a fresh, empty :class:`Location` per call, so runs never see
each other's state; the S3 server starts on first use and stops with :meth:`Stores.close`,
the temporary directories are removed there too.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from osqueue_io.storage import ObjectStore, open_store

STORE_KINDS = ("memory", "local", "s3")
_BUCKET = "osqueue-bench"


@attrs.frozen
class Location:
    """A fresh place for one queue: ``url`` (``--data`` for the broker), ``options`` for
    :func:`open_store` in this process and ``env`` for a broker subprocess."""

    kind: str
    url: str
    options: Mapping[str, Any] = attrs.field(factory=dict)
    env: Mapping[str, str] = attrs.field(factory=dict)

    def open(self) -> ObjectStore:
        """A store on this location, in this process. ``memory`` gives a new, empty
        store each time: one process only."""
        return open_store(self.url, **self.options)


class Stores:
    """Fresh locations of each kind; call :meth:`close` at the end."""

    def __init__(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="osqueue-bench-"))
        self._s3: Any = None  # moto.server.ThreadedMotoServer, started on demand
        self._s3_endpoint = ""

    def fresh(self, kind: str) -> Location:
        if kind == "memory":
            return Location(kind, "memory://")
        if kind == "local":
            return Location(kind, str(self._root / uuid.uuid4().hex[:12]))
        if kind == "s3":
            endpoint = self._s3_server()
            options = {
                "endpoint": endpoint,
                "region": "us-east-1",
                "access_key_id": "bench",
                "secret_access_key": "bench",
                "client_options": {"allow_http": True},
            }
            env = {
                "AWS_ENDPOINT": endpoint,
                "AWS_ALLOW_HTTP": "true",
                "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
            }
            return Location(kind, f"s3://{_BUCKET}/{uuid.uuid4().hex[:12]}", options, env)
        raise ValueError(f"unknown store {kind!r}: use one of {', '.join(STORE_KINDS)}")

    def _s3_server(self) -> str:
        if self._s3 is None:
            import boto3  # type: ignore[import-untyped]
            from moto.server import ThreadedMotoServer

            # moto's server logs every request through werkzeug: keep the table readable.
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            self._s3 = server
            host, port = server.get_host_and_port()
            self._s3_endpoint = f"http://{host}:{port}"
            boto3.client(
                "s3",
                endpoint_url=self._s3_endpoint,
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
            ).create_bucket(Bucket=_BUCKET)
        return self._s3_endpoint

    @property
    def temp_root(self) -> Path:
        """A directory removed by :meth:`close` (for scratch files)."""
        return self._root

    def close(self) -> None:
        if self._s3 is not None:
            self._s3.stop()
            self._s3 = None
        shutil.rmtree(self._root, ignore_errors=True)
