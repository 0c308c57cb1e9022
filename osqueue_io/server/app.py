"""The broker process's life: listen, take over the queue, serve, drain, stop.

:meth:`BrokerServer.run` does it all and returns the process exit code:

1. bind the listening socket (a taken port fails here, before any broker is fenced);
2. start a :class:`~osqueue_io.runtime.BrokerRuntime`, which takes over the state
   object and publishes this broker's address in it;
3. serve :class:`~osqueue_io.server.service.QueueService` over grpclib until SIGINT or
   SIGTERM, or until the broker fails (health: SERVING);
4. drain: refuse new calls with UNAVAILABLE, stop the runtime (accepted requests get
   their replies, waiting claims answer empty, ownership is released), wait for the
   admitted calls to send their replies (bounded), close the server.

A second signal during the drain stops at once. A broker that another broker replaced
(or that failed otherwise) refuses every call with its failure (UNAVAILABLE naming the
new owner), stops the same way and exits non-zero within moments.

A **standby** (``BrokerConfig.standby``, ``--standby``; docs/high-availability.md)
listens from the start, but its health is NOT_SERVING and every queue call gets
``NotOwner`` naming the owner it watches (clients follow it there), until the owner's
lease lapses and its takeover lands; then it serves as above, on the same server.
Replaced later, it drains and goes back to standing by instead of exiting.

Every server also answers the standard health checks (:mod:`osqueue_io.server.health`:
SERVING while serving as the owner), serves over TLS when given an ``ssl_context``, and
checks bearer tokens when given ``tokens`` (:mod:`osqueue_io.security`).

An idle broker writes nothing, so it would not notice a takeover by itself; every
``ownership_check`` seconds (``BrokerConfig.ownership_check``) the core checks the
state's version (a HEAD) to confirm ownership (none while writes are flowing anyway).
``--heartbeat-check`` sets that interval: lease expiry needs no polling, the core keeps
exact deadlines.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import ssl
from collections.abc import Sequence
from typing import TypedDict

import anyio
import attrs
from aiohttp.typedefs import Middleware
from anyio.abc import TaskStatus
from grpclib.server import Server

from osqueue_core import (
    MAX_QUEUES_PER_CLAIM,
    BrokerConfig,
    BrokerReplaced,
    BrokerStopping,
    OsqueueError,
    Phase,
)
from osqueue_io.http import BrokerMonitor
from osqueue_io.http.endpoints import HttpEndpoints
from osqueue_io.http.monitor import Monitor
from osqueue_io.http2 import limit_closed_streams
from osqueue_io.runtime import BrokerRuntime, default_identity
from osqueue_io.security import Access, Tokens
from osqueue_io.server.admission import (
    DEFAULT_FULL_REQUESTS_IN_FLIGHT,
    DEFAULT_MAX_CONCURRENT_CALLS,
    Admission,
)
from osqueue_io.server.codec import StrictProtoCodec, default_max_message_bytes
from osqueue_io.server.health import BrokerHealth
from osqueue_io.server.reader import BoundedService, Servable
from osqueue_io.server.service import QueueService
from osqueue_io.storage import ObjectStore

log = logging.getLogger("osqueue.server")

EXIT_OK = 0
#: The broker failed: could not listen or take over, was replaced, or did not stop cleanly.
EXIT_FAILED = 1
#: Bad command line or storage URL.
EXIT_USAGE = 2


def format_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 literal."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def advertised_address(host: str, port: int) -> str:
    """Where clients can reach a broker listening on ``host:port``: a wildcard host is
    useless to them, so it becomes this machine's host name."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return format_address(host, port)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not listening yet); port 0 picks a free one."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or "0.0.0.0", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def request_size_limits(
    config: BrokerConfig,
    max_message_bytes: int | None = None,
    max_request_bytes_in_flight: int | None = None,
) -> tuple[int, int]:
    """``(max_message_bytes, max_request_bytes_in_flight)`` with the defaults filled in
    (see :class:`BrokerServer`); ValueError if they cannot work together."""
    if max_message_bytes is None:
        max_message_bytes = default_max_message_bytes(config)
    if max_request_bytes_in_flight is None:
        max_request_bytes_in_flight = DEFAULT_FULL_REQUESTS_IN_FLIGHT * max_message_bytes
    if max_message_bytes < 1:
        raise ValueError("the message size limit must be at least one byte")
    if max_request_bytes_in_flight < max_message_bytes:
        raise ValueError(
            f"the request bytes in flight ({max_request_bytes_in_flight}) must be at "
            f"least the message size limit ({max_message_bytes}), or a request of the "
            "largest size allowed could never be read"
        )
    return max_message_bytes, max_request_bytes_in_flight


class ServerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`BrokerServer` (and of a group member's server,
    built on it: :class:`osqueue_io.group.server.GroupServer`)."""

    host: str
    port: int
    identity: str | None
    advertise: str | None
    ownership_check: float
    drain_timeout: float
    max_concurrent_calls: int
    max_message_bytes: int | None
    max_request_bytes_in_flight: int | None
    ssl_context: ssl.SSLContext | None
    tokens: Tokens | None
    metrics_listen: tuple[str, int] | None
    http_listen: tuple[str, int] | None
    http_ssl_context: ssl.SSLContext | None
    http_middlewares: Sequence[Middleware]


class BrokerServer:
    """One gRPC broker on ``store``, listening on ``host:port``.

    ``advertise`` is the address published in the state object and reported by Stats
    (default: the listening address, a wildcard host replaced by the host name).
    ``ownership_check`` is how often an idle broker confirms it still owns the state;
    ``drain_timeout`` bounds each step of a graceful stop. Call :meth:`run`.

    The intake is bounded (see :mod:`osqueue_io.server.admission`): at most
    ``max_concurrent_calls`` calls at once; no request over ``max_message_bytes``
    (default: the largest PushBatch ``config`` allows, with framing and slack); at most
    ``max_request_bytes_in_flight`` bytes of requests held at once (default: four
    requests of the largest size). Beyond them a call gets RESOURCE_EXHAUSTED at once.

    ``ssl_context`` (:func:`osqueue_io.security.server_context`) serves over TLS;
    ``tokens`` requires a bearer token of the right role on every call but health
    checks (:mod:`osqueue_io.security.access`). The standard health service
    (:mod:`osqueue_io.server.health`) answers on the same port.

    ``metrics_listen`` and ``http_listen`` (``(host, port)``, port 0 for a free one)
    add HTTP listeners (:mod:`osqueue_io.http`): Prometheus metrics alone, and the web
    dashboard with metrics. ``http_ssl_context`` serves them over TLS;
    ``http_middlewares`` guard them (``osqueue_io.http.required_access`` tells which
    routes read and which change the queue).
    """

    def __init__(
        self,
        store: ObjectStore,
        config: BrokerConfig | None = None,
        *,
        host: str = "0.0.0.0",
        port: int = 9090,
        identity: str | None = None,
        advertise: str | None = None,
        ownership_check: float = 5.0,
        drain_timeout: float = 15.0,
        max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS,
        max_message_bytes: int | None = None,
        max_request_bytes_in_flight: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        tokens: Tokens | None = None,
        metrics_listen: tuple[str, int] | None = None,
        http_listen: tuple[str, int] | None = None,
        http_ssl_context: ssl.SSLContext | None = None,
        http_middlewares: Sequence[Middleware] = (),
    ) -> None:
        if not ownership_check > 0 or not drain_timeout > 0:
            raise ValueError("ownership_check and drain_timeout must be positive")
        self.store = store
        self.config = attrs.evolve(config or BrokerConfig(), ownership_check=ownership_check)
        self.host = host
        self.port = port
        self.identity = identity or default_identity()
        self.advertise = advertise
        self.ownership_check = ownership_check
        self.drain_timeout = drain_timeout
        #: The bound ``host:port`` once listening (useful with port 0).
        self.address: str | None = None
        max_message_bytes, max_request_bytes_in_flight = request_size_limits(
            self.config, max_message_bytes, max_request_bytes_in_flight
        )
        self._codec = StrictProtoCodec(
            max_message_bytes, max(self.config.max_batch_ops, MAX_QUEUES_PER_CLAIM)
        )
        self._admission_limits = (max_concurrent_calls, max_request_bytes_in_flight)
        self.monitor = BrokerMonitor(store, self.config, identity=self.identity, address=advertise)
        self.http = HttpEndpoints(
            self._http_monitor(),
            metrics_listen=metrics_listen,
            http_listen=http_listen,
            ssl_context=http_ssl_context,
            middlewares=http_middlewares,
        )
        self._admission = self._new_admission()
        self._ssl_context = ssl_context
        self._access = Access(tokens or Tokens())
        #: The health service of the server running now (NOT_SERVING before any).
        self._health = BrokerHealth()
        self._stopping = False
        #: Sockets bound again to stand by after a replacement (closed by run()).
        self._extra_sockets: list[socket.socket] = []
        #: The runtime being opened (a standby may wait long there).
        self._opening: BrokerRuntime | None = None
        self._forced = False
        self._failure_logged = False
        # Event loop objects, made in run():
        self._stop_requested: anyio.Event | None = None
        self._drain_scope: anyio.CancelScope | None = None

    def _http_monitor(self) -> Monitor:
        """What the HTTP listeners show: this broker (a group member shows itself)."""
        return self.monitor

    def _new_admission(self) -> Admission:
        calls, request_bytes = self._admission_limits
        return Admission(max_concurrent_calls=calls, max_request_bytes_in_flight=request_bytes)

    # -- control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful stop (what SIGINT and SIGTERM do). Call it from the event
        loop :meth:`run` runs on."""
        self._stopping = True
        if self._opening is not None:
            self._opening.request_stop()
        if self._stop_requested is not None:
            self._stop_requested.set()

    def force_stop(self) -> None:
        """Skip the rest of the drain (what a second signal does)."""
        self._forced = True
        self.stop()
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    def _broker_failed(self, failure: BaseException) -> None:
        if not self._failure_logged:
            self._failure_logged = True
            # Why is the osqueue.broker line just before (BrokerLog logs every failure of
            # the core, which is where this one comes from): not said twice.
            log.info(
                "stopping serving: the broker %s",
                "was replaced" if isinstance(failure, BrokerReplaced) else "failed",
            )
        self._health.set_serving(False)
        if isinstance(failure, OsqueueError):
            # Fail new calls at once, with the reason, while the drain runs.
            self._admission.refuse(failure)
        if self._rejoins(failure):
            self._end_serving()  # drain, then stand by again
        else:
            self.stop()

    def _rejoins(self, failure: BaseException | None) -> bool:
        """A standby that was replaced stands by again (unless asked to stop)."""
        return self.config.standby and isinstance(failure, BrokerReplaced) and not self._stopping

    def _end_serving(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    # -- the whole life --------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> int:
        """Serve until stopped; returns the exit code (:data:`EXIT_OK` after a clean
        stop that released ownership). ``handle_signals`` needs the main thread."""
        self._stop_requested = anyio.Event()
        self._drain_scope = anyio.CancelScope()
        if self._stopping:
            self._stop_requested.set()
        try:
            sock = bind(self.host, self.port)
        except OSError as error:
            log.error("cannot listen on %s: %s", format_address(self.host, self.port), error)
            return EXIT_FAILED
        self._extra_sockets = []
        try:
            await self.http.start()
        except OSError as error:
            sock.close()
            log.error("cannot listen for HTTP: %s", error)
            return EXIT_FAILED
        try:
            async with anyio.create_task_group() as watchers:
                if handle_signals:
                    # Before the takeover: a signal during it stops the broker cleanly
                    # right after, instead of killing the process halfway.
                    await watchers.start(self._watch_signals)
                code = await self._run_broker(sock)
                watchers.cancel_scope.cancel()
            return code
        finally:
            await self.http.stop()
            sock.close()
            for extra in self._extra_sockets:
                extra.close()

    async def _run_broker(self, sock: socket.socket) -> int:
        bound_port: int = sock.getsockname()[1]
        self.address = format_address(self.host, bound_port)
        advertised = self.advertise or advertised_address(self.host, bound_port)
        self.monitor.address = advertised
        while True:
            runtime = BrokerRuntime(
                self.store,
                self.config,
                identity=self.identity,
                address=advertised,
                shutdown_timeout=self.drain_timeout,
            )
            server: Server | None = None
            self.monitor.attach(runtime)
            if self.config.standby:
                # A standby listens too: health checks get NOT_SERVING (so orchestrators
                # see it alive but send it nothing), queue calls NotOwner from its core,
                # naming the owner it watches (clients follow that).
                server = await self._start_server(runtime, sock, advertised)
                log.info(
                    "standing by on %s (health: NOT_SERVING): watching the owner of %s",
                    self.address,
                    self.store.url,
                )
            try:
                await self._open(runtime)
            except OsqueueError as error:
                log.error("cannot take over the queue in %s: %s", self.store.url, error)
                await self._close_server(server)
                return EXIT_FAILED
            if runtime.broker_phase is not Phase.RUNNING:
                await runtime.aclose()
                await self._close_server(server)
                self.monitor.detach(runtime)
                log.info("stopped while standing by")
                return EXIT_OK
            try:
                await self._serve(runtime, sock, advertised, server)
            finally:
                await runtime.aclose()  # in the task that started it, as anyio requires
                self.monitor.detach(runtime)
            if not self._rejoins(runtime.failure):
                return self._exit_code(runtime)
            # Replaced: serving closed the listening socket; bind it again, stand by.
            log.warning("%s; standing by again", runtime.failure)
            self._failure_logged = False
            self._admission = self._new_admission()
            self._stop_requested = anyio.Event()
            sock = bind(self.host, bound_port)
            self._extra_sockets.append(sock)

    async def _open(self, runtime: BrokerRuntime) -> None:
        """Open ``runtime``: take over (a standby: once the owner's lease lapses). A stop
        requested meanwhile stops it (a standby then never takes over)."""
        if self._stopping:
            return  # asked to stop before it began: never take over
        self._opening = runtime
        try:
            await runtime.open()
        finally:
            self._opening = None

    async def _start_server(
        self, runtime: BrokerRuntime, sock: socket.socket, advertised: str
    ) -> Server:
        """Serve ``runtime`` (and health checks) on ``sock``, over TLS when configured."""
        service = QueueService(runtime, address=advertised, on_failure=self._broker_failed)
        self._health = BrokerHealth()
        return await self._start_grpc(sock, service, self._health)

    async def _start_grpc(self, sock: socket.socket, *services: Servable) -> Server:
        """A gRPC server of ``services`` on ``sock``, started; a group member's too.

        The one place calls are guarded: each is held to the intake limits and checked
        against the tokens before its service sees it (:class:`BoundedService` with
        this server's :class:`~osqueue_io.security.Access`), over TLS when configured.
        """
        limit_closed_streams()  # ~12 MB per long-lived worker connection otherwise
        # Our codec is given explicitly, so grpclib adds no googleapis status-details
        # codec: an error's details become osqueue trailers instead (BoundedService).
        server = Server(
            [
                BoundedService(service, self._codec, self._admission, self._access)
                for service in services
            ],
            codec=self._codec,
            status_details_codec=None,
        )
        await server.start(sock=sock, ssl=self._ssl_context)
        return server

    @property
    def _tls_note(self) -> str:
        """`` (TLS)`` when serving gRPC over TLS, for the "listening on" log line."""
        return " (TLS)" if self._ssl_context is not None else ""

    async def _close_server(self, server: Server | None) -> None:
        """Stop a server that served a standby which never took over."""
        if server is None:
            return
        self._admission.refuse(BrokerStopping())
        self._health.close()
        server.close()
        with anyio.move_on_after(min(1.0, self.drain_timeout)):
            await server.wait_closed()

    async def _serve(
        self,
        runtime: BrokerRuntime,
        sock: socket.socket,
        advertised: str,
        server: Server | None = None,
    ) -> None:
        if server is None:
            server = await self._start_server(runtime, sock, advertised)
        stats = runtime.stats()
        log.info(
            "osqueue broker %r (epoch %d) listening on %s%s, storage %s",
            self.identity,
            stats.epoch,
            self.address,
            self._tls_note,
            self.store.url,
            extra={"epoch": stats.epoch, "revision": stats.revision},
        )
        self._health.set_serving(True)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._watch_failure, runtime)
            assert self._stop_requested is not None
            await self._stop_requested.wait()
            await self._drain(runtime, server)
            tasks.cancel_scope.cancel()

    async def _drain(self, runtime: BrokerRuntime, server: Server) -> None:
        failure = runtime.failure
        self._admission.refuse(failure if isinstance(failure, OsqueueError) else BrokerStopping())
        # Health watchers hear NOT_SERVING and end, so they do not hold the drain up.
        self._health.close()
        if failure is None:
            log.info("stopping: %d calls in flight", self._admission.running)
        assert self._drain_scope is not None
        with self._drain_scope:
            # Accepted requests are committed and answered, waiting claims answer
            # empty, and the final write releases ownership ...
            await runtime.stop()
            # ... then the admitted calls send those replies.
            with anyio.move_on_after(self.drain_timeout):
                await self._admission.wait_idle()
            if self._admission.running:
                log.warning(
                    "%d calls still running after %.1fs; closing them",
                    self._admission.running,
                    self.drain_timeout,
                )
        server.close()
        # Every admitted call is done (or given up on): what is left are cancelled
        # handlers, which end at once, and on Python >= 3.12 idle client connections,
        # which grpclib never closes and asyncio's wait_closed() would wait for.
        with anyio.move_on_after(min(1.0, self.drain_timeout)):
            await server.wait_closed()

    def _exit_code(self, runtime: BrokerRuntime) -> int:
        failure = runtime.failure
        if failure is not None:
            self._broker_failed(failure)  # logs it, if no call did yet
            return EXIT_FAILED
        if runtime.broker_phase is not Phase.STOPPED or self._forced:
            log.error("stopped without a clean drain; the next broker takes over anyway")
            return EXIT_FAILED
        log.info("stopped cleanly; ownership released")
        return EXIT_OK

    # -- background watches ----------------------------------------------------------

    async def _watch_signals(self, *, task_status: TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stopping:
                    log.warning("%s again: stopping now", name)
                    self.force_stop()
                else:
                    log.info("%s: draining", name)
                    self.stop()

    async def _watch_failure(self, runtime: BrokerRuntime) -> None:
        """Stop as soon as the broker fails (replaced, found at its next operation or
        ownership check), even if no call is there to notice."""
        await runtime.wait_for_phase(Phase.FAILED)
        failure = runtime.failure
        assert failure is not None
        self._broker_failed(failure)
