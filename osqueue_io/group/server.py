"""A scale-out group member: one process serving its share of a group's queues.

``python -m osqueue_io.server --group emails,video,... --data URL`` runs one; start
the same command on several machines (every member lists the same queues) and they
split the queues between them (docs/high-availability.md, "Scale-out"):
:meth:`GroupServer.run` does it all and returns the process exit code:

1. bind and listen at once (clients reach every member; a call for a queue this member
   does not serve is answered ``NotOwner`` naming the owner), guarded as a single
   broker is: TLS and bearer tokens (``ssl_context``, ``tokens``; docs/security.md);
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
import socket
import time
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Unpack

import anyio
import attrs

from osqueue_core import BrokerConfig, BrokerStopping, Phase
from osqueue_io.group.balance import Balancer
from osqueue_io.group.layout import check_group, queue_config
from osqueue_io.group.members import MemberRecord, group_digest
from osqueue_io.group.membership import Membership, queue_owner
from osqueue_io.group.queue_slot import QueueSlot
from osqueue_io.group.service import GroupService
from osqueue_io.http.group_monitor import GroupMonitor
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.server.app import (
    EXIT_FAILED,
    EXIT_OK,
    BrokerServer,
    ServerOptions,
    advertised_address,
    format_address,
)
from osqueue_io.storage import ObjectStore

log = logging.getLogger("osqueue.group")


class GroupServer(BrokerServer):
    """One member of the group of ``queues`` on ``store``, listening on ``host:port``.

    ``config`` is every queue's broker configuration (its keys and prefixes are set per
    queue, it is made a standby); it needs ``owner_lease``, which is also this member's
    lease in the group, and ``standby_poll``, how often it looks at the other members.
    The other arguments, :meth:`run`, :meth:`stop` and the signals are
    :class:`~osqueue_io.server.app.BrokerServer`'s, security included: ``ssl_context``
    and ``tokens`` guard the member's gRPC calls as they guard a single broker's, and
    ``http_ssl_context`` and ``http_middlewares`` its dashboard and metrics.
    """

    def __init__(
        self,
        store: ObjectStore,
        queues: Sequence[str],
        config: BrokerConfig,
        **options: Unpack[ServerOptions],
    ) -> None:
        if config.owner_lease is None:
            raise ValueError("a group needs owner leases: members judge each other by them")
        # Before the base class builds the HTTP listeners over _http_monitor().
        self.queues = check_group(queues)
        self.group_monitor: GroupMonitor | None = None
        super().__init__(store, attrs.evolve(config, standby=True), **options)
        self.lease: float = config.owner_lease
        self.balancer = Balancer(len(self.queues), self.lease)
        self.slots: dict[str, QueueSlot] = {}
        self.membership: Membership | None = None
        self._held = False
        #: The takeovers of the queue released last, when it was released.
        self._released_mark = 0
        self._changed_event: anyio.Event | None = None

    def _http_monitor(self) -> GroupMonitor:
        """The member's dashboard and metrics: every queue's runtime, and the group."""
        if self.group_monitor is None:
            self.group_monitor = GroupMonitor(
                self.store,
                self.config,
                identity=self.identity,
                address=self.advertise,
                queues=self.queues,
            )
        return self.group_monitor

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

    async def _run_broker(self, sock: socket.socket) -> int:
        """The member's life, once :meth:`run` has bound ``sock``."""
        self._changed_event = anyio.Event()
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
        monitor = self._http_monitor()
        monitor.membership = membership
        monitor.address = advertised
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
                monitor=monitor.monitors[queue],
            )
        service = GroupService(
            self.slots,
            identity=self.identity,
            address=advertised,
            lease_timeout=self.config.heartbeat_timeout,
            max_batch_ops=self.config.max_batch_ops,
        )
        # The single broker's path (intake limits, tokens: a worker-bound token's worker
        # ids are checked on every call, so each queue's broker holds it to the jobs it
        # holds; TLS), with its health service: SERVING while this member is in the
        # group and not stopping (it answers every queue's calls: those it does not
        # serve with NotOwner naming their owner), NOT_SERVING before it joined.
        server = await self._start_grpc(sock, service, self._health)
        log.info(
            "osqueue group member %r listening on %s%s, storage %s, %d queues",
            self.identity,
            self.address,
            self._tls_note,
            self.store.url,
            len(self.queues),
        )
        try:
            return await self._serve_member(membership)
        finally:
            server.close()
            with anyio.move_on_after(min(1.0, self.drain_timeout)):
                await server.wait_closed()

    async def _serve_member(self, membership: Membership) -> int:
        assert self._stop_requested is not None
        assert self._drain_scope is not None
        if not await membership.join(lambda: self._stopping):
            return EXIT_OK
        self._health.set_serving(True)
        self._balance_once(membership)
        async with anyio.create_task_group() as background:
            watching = anyio.CancelScope()

            async def watch_members() -> None:
                with watching:
                    await membership.run(self._changed)

            background.start_soon(watch_members)
            background.start_soon(self._balance, membership)
            # A second signal cancels the drain scope: the rest of the drain is skipped.
            with self._drain_scope:
                async with anyio.create_task_group() as lives:
                    for slot in self.slots.values():
                        lives.start_soon(slot.run)
                    await self._stop_requested.wait()
                    owned = self.owned()
                    log.info("stopping: leaving the group, releasing %d queues", len(owned))
                    self._health.close()
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
            log.error("stopped without a clean drain; the other members take over anyway")
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
