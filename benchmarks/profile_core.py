"""CPU per job of the core alone through the batch lifecycle: no event loop, no storage.

``python -m benchmarks.profile_core [--rounds N] [--runs R]``

The broker is driven through ``tests/core/harness.py`` (its in-memory ``SimStore``, every
effect executed at once). Each round is one input of 16 ``PushBatch`` of 100, 8
``Claim(count=100)`` and the ``Complete`` of every job the previous round's claims got,
like ``lifecycle_batch``'s producers and consumers; rounds go on, without pushes after
``--rounds``, until every job is completed. The backlog grows by 800 jobs a round, so
jobs spill into segments and most claims read them back, as in the benchmark. Printed:
process CPU per job (the best of ``--runs``).

The figure moves with the machine's load (a shared machine slows it by up to 2x). For
a count that does not, run it under callgrind twice and take the difference, which
leaves out start-up::

    valgrind --tool=callgrind python -m benchmarks.profile_core --rounds 1 --runs 1
    valgrind --tool=callgrind python -m benchmarks.profile_core --rounds 3 --runs 1

(instructions per job = (Ir of the second - Ir of the first) / 3,200, with
``PYTHONHASHSEED=0`` for both).
"""

from __future__ import annotations

import argparse
import time

from osqueue_core import BrokerConfig, Claim, ClaimedBatch, Command, Complete, PushBatch
from tests.core.harness import Harness

PAYLOAD = b"x" * 100
PRODUCERS = 16
CONSUMERS = 8
BATCH = 100


def lifecycle(harness: Harness, rounds: int) -> int:
    """Run ``rounds`` rounds of pushes, then claim and complete until the queue is
    empty; returns the jobs pushed."""
    held: list[tuple[str, str]] = []
    next_id = 0
    index = 0
    while index < rounds or held or harness.broker.stats().ready:
        commands: list[Command] = []
        if index < rounds:
            for _ in range(PRODUCERS):
                next_id += 1
                commands.append(PushBatch(("push", next_id), [PAYLOAD] * BATCH))
        claims = []
        for worker in range(CONSUMERS):
            next_id += 1
            claims.append(Claim(("claim", next_id), f"w{worker}", 0.0, ("default",), BATCH))
        commands += claims
        for job_id, worker_id in held:
            next_id += 1
            commands.append(Complete(("complete", next_id), job_id, worker_id))
        harness.broker.submit_many(commands, harness.now)
        harness.flush()
        held = []
        for claim in claims:
            reply = harness.replies.get(claim.request_id)
            if reply is not None and isinstance(reply.result, ClaimedBatch):
                held += [(job.job_id, claim.worker_id) for job in reply.result.jobs]
        harness.replies.clear()
        harness.now += 0.001
        index += 1
    return rounds * PRODUCERS * BATCH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    best = float("inf")
    for _ in range(args.runs):
        config = BrokerConfig(max_batch_ops=10_000, max_queued_commands=100_000)
        harness = Harness.started(config=config)
        lifecycle(harness, 2)  # warm up
        cpu = time.process_time()
        jobs = lifecycle(harness, args.rounds)
        best = min(best, (time.process_time() - cpu) / jobs)
        spills = harness.broker.stats().spills
    print(
        f"core batch lifecycle: {jobs:,} jobs, {best * 1e6:.1f} µs of CPU per job "
        f"(best of {args.runs}; {spills} spills)"
    )


if __name__ == "__main__":
    main()
