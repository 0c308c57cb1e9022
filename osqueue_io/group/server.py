"""A scale-out group member: one process serving its share of a group's queues.

``python -m osqueue_io.server --group emails,video,... --data URL`` runs one; start
the same command on several machines (every member lists the same queues) and they
split the queues between them (docs/high-availability.md, "Scale-out"):
:meth:`GroupServer.run` does it all and returns the process exit code:

1. bind and listen at once (clients reach every member; a call for a queue this member
   does not serve is answered ``NotOwner`` naming the owner);
2. join the group: a member record in the bucket (:mod:`osqueue_io.group.membership`);
3. run, for every queue, a standby broker (:mod:`osqueue_io.group.queue_slot`): owner
   leases and fencing make each queue's owner exactly one member;
4. balance (:mod:`osqueue_io.group.balance`): after every change and every poll, hold
   the standbys' takeovers while this member owns its quota, release one queue at a
   time while it owns more;
5. on SIGINT/SIGTERM: mark the member record left, release every queue it serves
   (accepted requests are answered first), let the admitted calls answer, close.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from functools import partial

import anyio
import attrs
from anyio.abc import TaskStatus
from grpclib.server import Server

from osqueue_core import MAX_QUEUES_PER_CLAIM, BrokerConfig, BrokerStopping, Phase
from osqueue_io.group.balance import Balancer
from osqueue_io.group.layout import check_group, queue_config
from osqueue_io.group.members import MemberRecord, group_digest
from osqueue_io.group.membership import Membership, queue_owner
from osqueue_io.group.queue_slot import QueueSlot
from osqueue_io.group.service import GroupService
from osqueue_io.http2 import limit_closed_streams
from osqueue_io.runtime import BrokerRuntime, default_identity
from osqueue_io.server.admission import DEFAULT_MAX_CONCURRENT_CALLS, Admission
from osqueue_io.server.app import (
    EXIT_FAILED,
    EXIT_OK,
    advertised_address,
    bind,
    format_address,
    request_size_limits,
)
from osqueue_io.server.codec import StrictProtoCodec
from osqueue_io.server.reader import BoundedService
from osqueue_io.storage import ObjectStore

log = logging.getLogger("osqueue.group")


class GroupServer:
    """One member of the group of ``queues`` on ``store``, listening on ``host:port``.

    ``config`` is every queue's broker configuration (its keys and prefixes are set per
    queue, it is made a standby); it needs ``owner_lease``, which is also this member's
    lease in the group, and ``standby_poll``, how often it looks at the other members.
    The other arguments are :class:`~osqueue_io.server.app.BrokerServer`'s.
    """

    def __init__(
        self,
        store: ObjectStore,
        queues: Sequence[str],
        config: BrokerConfig,
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
    ) -> None:
        if config.owner_lease is None:
            raise ValueError("a group needs owner leases: members judge each other by them")
        if not ownership_check > 0 or not drain_timeout > 0:
            raise ValueError("ownership_check and drain_timeout must be positive")
        self.store = store
        self.queues = check_group(queues)
        self.config = attrs.evolve(config, ownership_check=ownership_check, standby=True)
        self.lease: float = config.owner_lease
        self.host = host
        self.port = port
        self.identity = identity or default_identity()
        self.advertise = advertise
        self.drain_timeout = drain_timeout
        #: The bound ``host:port`` once listening (useful with port 0).
        self.address: str | None = None
        max_message_bytes, request_bytes = request_size_limits(
            self.config, max_message_bytes, max_request_bytes_in_flight
        )
        self._codec = StrictProtoCodec(
            max_message_bytes, max(self.config.max_batch_ops, MAX_QUEUES_PER_CLAIM)
        )
        self._admission = Admission(
            max_concurrent_calls=max_concurrent_calls, max_request_bytes_in_flight=request_bytes
        )
        self.balancer = Balancer(len(self.queues), self.lease)
        self.slots: dict[str, QueueSlot] = {}
        self.membership: Membership | None = None
        self._held = False
        #: The takeovers of the queue released last, when it was released.
        self._released_mark = 0
        self._stopping = False
        self._forced = False
        self._stop_requested: anyio.Event | None = None
        self._changed_event: anyio.Event | None = None

    # -- control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful stop (what SIGINT and SIGTERM do), from the event loop."""
        self._stopping = True
        if self._stop_requested is not None:
            self._stop_requested.set()

    def force_stop(self) -> None:
        """Skip the rest of the drain (what a second signal does)."""
        self._forced = True
        self.stop()

    def owned(self) -> list[str]:
        """The queues this member serves now."""
        return [queue for queue, slot in self.slots.items() if slot.phase is Phase.RUNNING]

    def _runtime(self, config: BrokerConfig, address: str) -> BrokerRuntime:
        return BrokerRuntime(
            self.store,
            config,
            identity=self.identity,
            address=address,
            shutdown_timeout=self.drain_timeout,
        )

    def _changed(self) -> None:
        if self._changed_event is not None:
            self._changed_event.set()

    # -- the whole life --------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> int:
        """Serve until stopped; returns the exit code (:data:`EXIT_OK` after a clean
        stop that released every queue). ``handle_signals`` needs the main thread."""
        self._stop_requested = anyio.Event()
        self._changed_event = anyio.Event()
        if self._stopping:
            self._stop_requested.set()
        try:
            sock = bind(self.host, self.port)
        except OSError as error:
            log.error("cannot listen on %s: %s", format_address(self.host, self.port), error)
            return EXIT_FAILED
        try:
            with anyio.CancelScope() as forced:
                async with anyio.create_task_group() as watchers:
                    if handle_signals:
                        await watchers.start(self._watch_signals, forced)
                    code = await self._run_member(sock)
                    watchers.cancel_scope.cancel()
                return code
            return EXIT_FAILED  # a second signal cut the drain short
        finally:
            sock.close()

    async def _run_member(self, sock: socket.socket) -> int:
        bound_port: int = sock.getsockname()[1]
        self.address = format_address(self.host, bound_port)
        advertised = self.advertise or advertised_address(self.host, bound_port)
        membership = self.membership = Membership(
            self.store,
            MemberRecord(
                self.identity,
                uuid.uuid4().hex,
                advertised,
                self.lease,
                group=group_digest(self.queues),
            ),
            poll=self.config.standby_poll,
        )
        for queue in self.queues:
            self.slots[queue] = QueueSlot(
                queue,
                identity=self.identity,
                address=advertised,
                make_runtime=partial(self._runtime, queue_config(self.config, queue), advertised),
                held=lambda: self._held,
                changed=self._changed,
                retry_after=self.lease,
                clock=time.monotonic,
            )
        service = GroupService(
            self.slots,
            identity=self.identity,
            address=advertised,
            lease_timeout=self.config.heartbeat_timeout,
            max_batch_ops=self.config.max_batch_ops,
        )
        limit_closed_streams()
        server = Server(
            [BoundedService(service, self._codec, self._admission)],
            codec=self._codec,
            status_details_codec=None,
        )
        await server.start(sock=sock)
        log.info(
            "osqueue group member %r listening on %s, storage %s, %d queues",
            self.identity,
            self.address,
            self.store.url,
            len(self.queues),
        )
        try:
            return await self._serve(membership)
        finally:
            server.close()
            with anyio.move_on_after(min(1.0, self.drain_timeout)):
                await server.wait_closed()

    async def _serve(self, membership: Membership) -> int:
        assert self._stop_requested is not None
        if not await membership.join(lambda: self._stopping):
            return EXIT_OK
        self._balance_once(membership)
        async with anyio.create_task_group() as background:
            watching = anyio.CancelScope()

            async def watch_members() -> None:
                with watching:
                    await membership.run(self._changed)

            background.start_soon(watch_members)
            background.start_soon(self._balance, membership)
            async with anyio.create_task_group() as lives:
                for slot in self.slots.values():
                    lives.start_soon(slot.run)
                await self._stop_requested.wait()
                owned = self.owned()
                log.info("stopping: leaving the group, releasing %d queues", len(owned))
                self._admission.refuse(BrokerStopping())
                watching.cancel()
                await membership.leave()
                for slot in self.slots.values():
                    slot.stop()
            # Every queue is released (or given up on after drain_timeout).
            with anyio.move_on_after(self.drain_timeout):
                await self._admission.wait_idle()
            background.cancel_scope.cancel()
        if self._forced:
            return EXIT_FAILED
        log.info("stopped cleanly; every queue released")
        return EXIT_OK

    # -- balance -----------------------------------------------------------------------

    async def _balance(self, membership: Membership) -> None:
        """Hold or release after every change (and every poll, for the other members)."""
        while True:
            with anyio.move_on_after(self.config.standby_poll):
                assert self._changed_event is not None
                await self._changed_event.wait()
            self._changed_event = anyio.Event()
            if self._stopping:
                return
            pending = self.balancer.pending
            if pending is not None and await self._taken(pending):
                self.balancer.taken(pending)
            self._balance_once(membership)

    async def _taken(self, queue: str) -> bool:
        """Whether the queue released last has a new owner: this member again (a
        takeover since the release), or another one (its state says so)."""
        slot = self.slots[queue]
        if slot.takeovers > self._released_mark:
            return True
        if slot.phase is not Phase.STANDBY:
            return False  # still releasing it
        owner = None
        with anyio.move_on_after(self.lease):
            owner = await queue_owner(self.store, queue)
        return owner is not None and not owner.released and owner.identity != self.identity

    def _balance_once(self, membership: Membership) -> None:
        live, rank = membership.standing()
        owning = [slot for slot in self.slots.values() if slot.owns]
        serving = sorted(
            (slot for slot in owning if slot.phase is Phase.RUNNING),
            key=lambda slot: slot.owned_since,
        )
        decision = self.balancer.decide(
            len(owning), [slot.queue for slot in serving], live, rank, time.monotonic()
        )
        if decision.hold != self._held:
            self._held = decision.hold
            log.info(
                "%s takeovers: %d of %d queues owned, %d live members",
                "holding" if decision.hold else "allowing",
                len(owning),
                len(self.queues),
                live,
            )
            for slot in self.slots.values():
                slot.hold(decision.hold)
        if decision.release is not None:
            self._released_mark = self.slots[decision.release].takeovers
            log.info(
                "releasing queue %s (owning %d, %d live members)",
                decision.release,
                len(owning),
                live,
            )
            self.slots[decision.release].release()

    # -- signals -----------------------------------------------------------------------

    async def _watch_signals(
        self, forced: anyio.CancelScope, *, task_status: TaskStatus[None]
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stopping:
                    log.warning("%s again: stopping now", name)
                    self.force_stop()
                    forced.cancel()
                else:
                    log.info("%s: draining", name)
                    self.stop()
