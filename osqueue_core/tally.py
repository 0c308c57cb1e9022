"""What happened to jobs in a batch, counted for monitoring once the batch is durable.

A batch counts the lease expiries, retries and deaths its changes make; the commit
protocol adds a batch's tally to the broker's totals when the write carrying it lands.
So the totals count only what storage holds: a batch lost with its broker (replaced,
crashed) counts nowhere, and the broker that takes over counts what it does itself.
"""

from __future__ import annotations

import attrs


@attrs.define
class JobTally:
    """Counts of job events (see the module docstring)."""

    #: Claimed jobs whose worker sent no heartbeat in time (each then retried or dead).
    expired_leases: int = 0
    #: Failed attempts (a fail, or an expired lease) scheduled to run again.
    retries: int = 0
    #: Jobs that became dead letters (out of attempts, or failed without retry).
    dead_letters: int = 0

    def add(self, other: JobTally) -> None:
        self.expired_leases += other.expired_leases
        self.retries += other.retries
        self.dead_letters += other.dead_letters
