"""The broker's phases."""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """The broker's life: STARTING -> RUNNING -> STOPPING -> STOPPED, or FAILED."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
