"""The broker's phases and every rule that depends on them, in two tables.

Theory of operation: a broker is STARTING until its takeover write lands, RUNNING
until asked to stop, STOPPING until its release write lands, then STOPPED; any fatal
error (replaced by another broker, corrupt or missing state, storage unreachable while
starting) makes it FAILED, for good. ``TRANSITIONS`` says which event moves which phase
where; a pair missing from it is a bug in the broker (``InvalidTransition``).
``ON_SUBMIT`` says what a client command does on arrival in each phase. Nothing else in
the core compares phases to decide what a command may do.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """The broker's life: STARTING -> RUNNING -> STOPPING -> STOPPED, or FAILED."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class PhaseEvent(enum.Enum):
    """What moves a broker between phases."""

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


class InvalidTransition(AssertionError):
    """A phase change the table does not allow: a bug in the broker, never bad input."""


S, R, P, D, F = Phase.STARTING, Phase.RUNNING, Phase.STOPPING, Phase.STOPPED, Phase.FAILED

TRANSITIONS: dict[tuple[Phase, PhaseEvent], Phase] = {
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

ON_SUBMIT: dict[Phase, Admission] = {
    S: Admission.QUEUE,
    R: Admission.APPLY,
    P: Admission.REFUSE_STOPPING,
    D: Admission.REFUSE_STOPPING,
    F: Admission.REFUSE_FAILED,
}

#: Phases in which claims may wait for a job (a stopping broker answers them empty).
WAITING_ALLOWED = frozenset({R})
#: Phases that end the broker: no state operation is ever issued again.
FINAL = frozenset({D, F})


def next_phase(phase: Phase, event: PhaseEvent) -> Phase:
    """The phase ``event`` leads to from ``phase``; ``InvalidTransition`` if none."""
    try:
        return TRANSITIONS[phase, event]
    except KeyError:
        raise InvalidTransition(f"{event.name} is impossible in phase {phase.name}") from None
