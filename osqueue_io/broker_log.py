"""What a broker runtime logs about its broker: the core's notices and its phase changes.

:class:`BrokerLog` is called by :class:`~osqueue_io.runtime.BrokerRuntime` after every
round of inputs. Levels (logger ``osqueue.broker``):

=====================================  =========  ==========================================
every commit (a state write landed)    DEBUG      epoch, revision, operations, state_bytes
the last write of a clean stop         INFO       epoch, revision
a takeover; a standby stepping back    INFO       epoch, revision, identity
a lease that ran out                   WARNING    queue, job_id, worker_id, epoch, revision
a job that became a dead letter        WARNING    queue, job_id, epoch, revision, reason
fenced: replaced by another broker     WARNING    epoch, revision, new_identity, new_epoch
any other failure                      ERROR      epoch, revision
=====================================  =========  ==========================================

Each line says it all in its message and passes the fields as ``extra`` for JSON logs
(:mod:`osqueue_io.logs`). Job notices come from the core once their write landed
(:mod:`osqueue_core.notices`), so a line never reports what was not made durable.
The per-request path pays one call per round and nothing per request: a commit's line is
only formatted when DEBUG is on.
"""

from __future__ import annotations

import logging

from osqueue_core import (
    Broker,
    BrokerReplaced,
    Committed,
    JobDead,
    LeaseExpired,
    Phase,
    quote,
)

log = logging.getLogger("osqueue.broker")


def _job_fields(notice: LeaseExpired | JobDead, **more: str) -> dict[str, object]:
    """The JSON fields of a line about one job."""
    return {
        "queue": notice.queue,
        "job_id": notice.job_id,
        "attempts": notice.attempts,
        "epoch": notice.epoch,
        "revision": notice.revision,
        **more,
    }


class BrokerLog:
    """Logs what one broker did (see the module docstring); ``storage`` names its
    queue's storage in takeover lines."""

    def __init__(self, storage: str) -> None:
        self._storage = storage
        self._phase: Phase | None = None

    def report(self, broker: Broker) -> None:
        """Log the notices ``broker`` has, and its phase if it changed."""
        notices, dropped = broker.take_notices()
        if dropped:
            log.warning("%d broker notices were dropped (not logged)", dropped)
        for notice in notices:
            if isinstance(notice, Committed):
                self._committed(notice)
            elif isinstance(notice, LeaseExpired):
                log.warning(
                    "lease of job %s expired: no heartbeat from worker %s in time (attempt "
                    "%d counts as failed); queue %s, epoch %d, revision %d",
                    quote(notice.job_id),
                    quote(notice.worker_id),
                    notice.attempts,
                    notice.queue,
                    notice.epoch,
                    notice.revision,
                    extra=_job_fields(notice, worker_id=notice.worker_id),
                )
            elif isinstance(notice, JobDead):
                log.warning(
                    "job %s is a dead letter after %d attempt(s): %s; queue %s, epoch %d, "
                    "revision %d",
                    quote(notice.job_id),
                    notice.attempts,
                    quote(notice.reason, 200),
                    notice.queue,
                    notice.epoch,
                    notice.revision,
                    extra=_job_fields(notice, reason=notice.reason[:200]),
                )
        if broker.phase is not self._phase:
            previous, self._phase = self._phase, broker.phase
            self._phase_changed(broker, previous)

    def _committed(self, notice: Committed) -> None:
        fields = {"epoch": notice.epoch, "revision": notice.revision}
        if notice.released:
            log.info(
                "released the queue at revision %d (epoch %d)",
                notice.revision,
                notice.epoch,
                extra=fields,
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug(
                "committed revision %d (epoch %d): %d operation(s), %d bytes",
                notice.revision,
                notice.epoch,
                notice.operations,
                notice.state_bytes,
                extra={
                    **fields,
                    "operations": notice.operations,
                    "state_bytes": notice.state_bytes,
                },
            )

    def _phase_changed(self, broker: Broker, previous: Phase | None) -> None:
        phase = broker.phase
        owner = broker.owner
        epoch = owner.epoch if owner is not None else 0
        revision = broker.stats().revision if phase is not Phase.STANDBY else 0
        fields = {"epoch": epoch, "revision": revision, "identity": broker.identity}
        if phase is Phase.RUNNING:
            log.info(
                "took over the queue in %s: epoch %d, revision %d",
                self._storage,
                epoch,
                revision,
                extra={**fields, "storage": self._storage},
            )
        elif phase is Phase.STANDBY and previous is Phase.STARTING:
            log.info("stepped back: the owner is alive after all; watching it again")
        elif phase is Phase.FAILED:
            failure = broker.failure
            if isinstance(failure, BrokerReplaced):
                log.warning(
                    "fenced at epoch %d, revision %d: replaced by %s (epoch %d); this "
                    "broker never writes the state again",
                    epoch,
                    revision,
                    quote(failure.new_identity),
                    failure.new_epoch,
                    extra={
                        **fields,
                        "new_identity": failure.new_identity,
                        "new_epoch": failure.new_epoch,
                    },
                )
            else:
                log.error("the broker failed at epoch %d: %s", epoch, failure, extra=fields)
