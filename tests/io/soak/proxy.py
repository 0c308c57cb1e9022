"""A TCP relay between the brokers and moto's S3 server that can kill a broker at an
exact point of a storage write: when the write reaches it (the write never lands), or
when the store's answer comes back (the write landed; the broker never learns it).

It relays bytes unchanged and looks only at request lines. The brokers' S3 client
speaks HTTP/1.1 without pipelining, so on one connection a request is followed by its
response before the next request: client bytes arriving when no request is open, or
after the response began, start a new request.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
import attrs

from tests.io.soak.processes import free_port

_CHUNK = 65536


@attrs.frozen
class Trigger:
    """Kill on the next ``PUT`` whose path ends with ``suffix`` (or contains it, for a
    folder such as ``/archive/``): on its ``request`` (before it is forwarded) or on
    the first byte of its ``response`` (before that is forwarded)."""

    suffix: str
    moment: str  # "request" or "response"

    def matches(self, method: str, path: str) -> bool:
        if method != "PUT":
            return False
        if self.suffix.endswith("/"):
            return self.suffix in path
        return path.endswith(self.suffix)


@attrs.define
class _Exchange:
    """The request open on one connection."""

    line: bytes = b""
    method: str = ""
    path: str = ""
    #: The trigger this request matched when it began, if any.
    trigger: Trigger | None = None
    response_started: bool = False

    def request_kills(self, data: bytes, armed: Trigger | None) -> bool:
        """Client bytes: whether ``armed`` fires on them (a matching request)."""
        if self.response_started:  # a new request begins
            self.line, self.method, self.path = b"", "", ""
            self.trigger, self.response_started = None, False
        if self.method:
            return False
        self.line += data
        if b"\r\n" not in self.line:
            return False
        parts = self.line.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        self.method, self.path = parts[0], parts[1] if len(parts) > 1 else ""
        if armed is not None and armed.matches(self.method, self.path):
            self.trigger = armed
        return self._due(armed, "request")

    def response_kills(self, _: bytes, armed: Trigger | None) -> bool:
        """Store bytes: whether ``armed`` fires on them (the answer to a matching write)."""
        self.response_started = True
        return self._due(armed, "response")

    def _due(self, armed: Trigger | None, moment: str) -> bool:
        return armed is not None and self.trigger is armed and armed.moment == moment


class KillProxy:
    """Listens on 127.0.0.1; every connection is relayed to ``upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._trigger: Trigger | None = None
        self._on_fire: Callable[[], None] | None = None
        self.fired = anyio.Event()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, trigger: Trigger, on_fire: Callable[[], None]) -> None:
        """Fire ``on_fire`` (which kills the broker) at ``trigger``; once."""
        self._trigger, self._on_fire = trigger, on_fire
        self.fired = anyio.Event()

    def disarm(self) -> None:
        self._trigger = self._on_fire = None

    def _fire(self) -> None:
        on_fire = self._on_fire
        self.disarm()
        self.fired.set()
        if on_fire is not None:
            on_fire()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        task_status.started()
        await listener.serve(self._relay)

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        try:
            upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
        except OSError:
            await client.aclose()
            return
        exchange = _Exchange()
        async with client, upstream, anyio.create_task_group() as pumps:
            scope = pumps.cancel_scope
            pumps.start_soon(self._pump, client, upstream, exchange.request_kills, scope)
            pumps.start_soon(self._pump, upstream, client, exchange.response_kills, scope)

    async def _pump(
        self,
        source: anyio.abc.SocketStream,
        sink: anyio.abc.SocketStream,
        kills: Callable[[bytes, Trigger | None], bool],
        scope: anyio.CancelScope,
    ) -> None:
        """Copy ``source`` to ``sink`` until either side closes, or until ``kills``
        says the broker dies at these bytes (then they are not forwarded)."""
        try:
            while True:
                data = await source.receive(_CHUNK)
                if kills(data, self._trigger):
                    self._fire()
                    break
                await sink.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        scope.cancel()
