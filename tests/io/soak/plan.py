"""What a soak run does: its configuration, and the kill moments drawn from its seed."""

from __future__ import annotations

import random
from pathlib import Path

import attrs

#: Kills at an exact point of a storage write, made by the S3 relay
#: (:mod:`tests.io.soak.proxy`): the write's path, whether the broker dies when the
#: write reaches the store (it never lands) or when the store answers (it landed, the
#: broker never learns it), and how the round is reported.
TARGETED: dict[str, tuple[str, str, str]] = {
    "takeover-request": ("/state.json", "request", "takeover write, before it landed"),
    "takeover-response": ("/state.json", "response", "takeover write landed, unanswered"),
    "write-request": ("/state.json", "request", "state write, before it landed"),
    "write-response": ("/state.json", "response", "state write landed, unanswered"),
    "archive-request": ("/archive/", "request", "archive write, before it landed"),
    "archive-response": ("/archive/", "response", "archive write landed, unanswered"),
}


@attrs.frozen
class SoakConfig:
    """One soak run: the store, the rounds, the load, and the kill plan's shares."""

    rounds: int = 10
    store: str = "local"  # or "s3"
    seed: int = attrs.Factory(lambda: random.randrange(2**32))
    publishers: int = 2
    consumers: int = 3
    #: The brokers' --heartbeat-timeout: an abandoned job comes back after this long.
    lease_timeout: float = 3.0
    #: The brokers' --spill-jobs: small, so the backlog moves in and out of segments
    #: while brokers are killed (0: never spill).
    spill_jobs: int = 8
    #: Longest time a broker serves before its kill.
    max_delay: float = 1.5
    #: Shares of rounds killed while starting and right after serving began ...
    startup_kills: float = 0.15
    early_kills: float = 0.15
    #: ... and (S3 only) at an exact point of a write (:data:`TARGETED`).
    targeted_kills: float = 0.4
    #: Longest outage between a kill and the next start.
    max_outage: float = 0.3
    #: Where logs and evidence go (default: a new temporary directory).
    run_dir: Path | None = None
    #: Keep the run directory even when every check passed.
    keep: bool = False
    #: Print a line per round.
    verbose: bool = False


@attrs.frozen
class KillPlan:
    """When one round's kill comes.

    ``startup``: ``delay`` times the typical start-up time after the spawn. ``early`` /
    ``serving``: ``delay`` seconds after the broker began serving. A :data:`TARGETED`
    mode: at that point of the next matching write (``takeover-*``: the broker's
    takeover write; the others: the first matching write ``delay`` seconds after
    serving began).
    """

    mode: str
    delay: float
    outage: float


def plan_rounds(config: SoakConfig) -> list[KillPlan]:
    rng = random.Random(f"{config.seed}:plan")
    targeted = config.targeted_kills if config.store == "s3" else 0.0
    plans = []
    for number in range(1, config.rounds + 1):
        draw = rng.random()
        if draw < config.startup_kills:
            # Half aimed at the takeover, the last moments before serving begins.
            low, high = (0.8, 1.1) if rng.random() < 0.5 else (0.0, 1.3)
            mode, delay = "startup", rng.uniform(low, high)
        elif draw < config.startup_kills + config.early_kills:
            mode, delay = "early", rng.uniform(0.0, 0.05)
        elif draw < config.startup_kills + config.early_kills + targeted:
            mode = rng.choice(sorted(TARGETED))
            if number == 1 and mode.startswith("takeover-"):
                mode = mode.replace("takeover-", "write-")  # the first broker must serve
            delay = rng.uniform(0.0, config.max_delay)
        else:
            mode, delay = "serving", rng.uniform(0.05, config.max_delay)
        plans.append(KillPlan(mode, delay, rng.uniform(0.0, config.max_outage)))
    return plans
