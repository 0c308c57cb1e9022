"""The broker's phases and every rule that depends on them, in two tables.

Theory of operation: a standby broker is STANDBY, watching the owner, until the owner's
lease lapses (it goes STARTING) or it is stopped; a takeover it loses to a live owner
takes it back to STANDBY. A broker is STARTING until its takeover write lands, RUNNING
until asked to stop, STOPPING until its release write lands, then STOPPED; any fatal
error (replaced by another broker, corrupt or missing state, storage unreachable while
starting) makes it FAILED, for good. ``TRANSITIONS`` says which event moves which phase
where; a pair missing from it is a bug in the broker (``InvalidTransition``). ``RULES``
says, per phase, what a command does on arrival and what the broker does on its own.
Nothing else in the core compares phases: it asks ``RULES[phase]``.
"""

from __future__ import annotations

import enum

import attrs


class Phase(enum.Enum):
    """The broker's life: [STANDBY ->] STARTING -> RUNNING -> STOPPING -> STOPPED, or
    FAILED."""

    STANDBY = "standby"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class PhaseEvent(enum.Enum):
    """What moves a broker between phases."""

    #: A standby found the owner's lease lapsed (or released, or no state): take over.
    LAPSED = enum.auto()
    #: A standby's takeover lost to a live owner: watch again.
    STEPPED_BACK = enum.auto()
    #: The takeover write landed: this broker owns the state.
    TOOK_OVER = enum.auto()
    #: ``stop()`` was called.
    STOP = enum.auto()
    #: The final write, which releases ownership, landed.
    RELEASED = enum.auto()
    #: Replaced, corrupt or missing state, divergence, storage unreachable at start.
    FATAL = enum.auto()


class Admission(enum.Enum):
    """What ``submit`` does with a command."""

    #: Keep it until the takeover lands (bounded: beyond the limit, Overloaded).
    QUEUE = enum.auto()
    #: Apply it to the head state now (or queue it behind a full batch).
    APPLY = enum.auto()
    #: Answer ``BrokerStopping``.
    REFUSE_STOPPING = enum.auto()
    #: Answer the broker's ``failure``.
    REFUSE_FAILED = enum.auto()
    #: Answer ``NotOwner`` naming the owner this standby watches.
    REFUSE_STANDBY = enum.auto()


@attrs.frozen
class PhaseRules:
    """What a broker does in one phase."""

    #: What ``submit`` does with a command.
    admission: Admission
    #: Commands queued behind a full batch (or the takeover) are applied as room frees.
    applies_queued: bool
    #: A claim may wait for a job (otherwise it is answered ``NothingToClaim``).
    waiting_allowed: bool
    #: A dirty batch may linger to gather more; an idle broker checks its ownership; a
    #: busy one reads takeover requests.
    lingers: bool
    checks_ownership: bool
    polls_takeover_requests: bool
    #: The next write releases ownership (once every queued command is applied).
    releases: bool
    #: Nothing happens any more: no state operation, no timer.
    final: bool
    #: A standby: only its watch on the owner runs.
    watches: bool = False


class InvalidTransition(AssertionError):
    """A phase change the table does not allow: a bug in the broker, never bad input."""


W, S, R, P = Phase.STANDBY, Phase.STARTING, Phase.RUNNING, Phase.STOPPING
D, F = Phase.STOPPED, Phase.FAILED

TRANSITIONS: dict[tuple[Phase, PhaseEvent], Phase] = {
    (W, PhaseEvent.LAPSED): S,
    (S, PhaseEvent.STEPPED_BACK): W,
    # Stopped while its takeover was under way, and it lost: nothing was ever owned.
    (P, PhaseEvent.STEPPED_BACK): D,
    (W, PhaseEvent.STOP): D,
    (W, PhaseEvent.FATAL): F,
    (S, PhaseEvent.TOOK_OVER): R,
    # Stopped while starting: the takeover finishes first, then the release is written.
    (P, PhaseEvent.TOOK_OVER): P,
    (S, PhaseEvent.STOP): P,
    (R, PhaseEvent.STOP): P,
    (P, PhaseEvent.STOP): P,
    (D, PhaseEvent.STOP): D,
    (F, PhaseEvent.STOP): F,
    (P, PhaseEvent.RELEASED): D,
    (S, PhaseEvent.FATAL): F,
    (R, PhaseEvent.FATAL): F,
    (P, PhaseEvent.FATAL): F,
}

# fmt: off
RULES: dict[Phase, PhaseRules] = {
    #  admission                         queued waits  linger checks polls  releases final
    W: PhaseRules(Admission.REFUSE_STANDBY,  False, False, False, False, False, False, False, True),
    S: PhaseRules(Admission.QUEUE,           True,  False, False, False, False, False, False),
    R: PhaseRules(Admission.APPLY,           True,  True,  True,  True,  True,  False, False),
    P: PhaseRules(Admission.REFUSE_STOPPING, True,  False, False, False, False, True,  False),
    D: PhaseRules(Admission.REFUSE_STOPPING, False, False, False, False, False, False, True),
    F: PhaseRules(Admission.REFUSE_FAILED,   False, False, False, False, False, False, True),
}
# fmt: on


def initial_phase(standby: bool) -> Phase:
    """Where a broker begins: watching the owner, or taking the state over at once."""
    return Phase.STANDBY if standby else Phase.STARTING


def next_phase(phase: Phase, event: PhaseEvent) -> Phase:
    """The phase ``event`` leads to from ``phase``; ``InvalidTransition`` if none."""
    try:
        return TRANSITIONS[phase, event]
    except KeyError:
        raise InvalidTransition(f"{event.name} is impossible in phase {phase.name}") from None
