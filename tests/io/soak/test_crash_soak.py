"""The crash soak's short profile: a few SIGKILLs of a loaded broker process on a local
directory and on moto's S3 server, then a drain and every check of
:mod:`tests.io.soak.checks`. The long profile is ``make soak`` (docs/reliability.md).

The seeds are chosen so the local plan kills a broker while it serves, right after it
began serving, and while it starts, and the S3 plan also when its takeover write and a
later state write have landed but before the broker hears so.
"""

from __future__ import annotations

import pytest

from tests.io.soak.driver import run_soak
from tests.io.soak.plan import SoakConfig, plan_rounds

pytestmark = pytest.mark.anyio

PROFILES = {
    "local": SoakConfig(rounds=5, store="local", seed=0),
    "s3": SoakConfig(rounds=4, store="s3", seed=131),
}
#: What each profile's seed makes it do (the S3 relay kills at exact write points).
MODES = {
    "local": ["serving", "startup", "early", "serving", "serving"],
    "s3": ["startup", "takeover-response", "early", "write-response"],
}


@pytest.mark.parametrize("store", PROFILES)
async def test_crash_soak(store: str) -> None:
    config = PROFILES[store]
    assert [plan.mode for plan in plan_rounds(config)] == MODES[store]
    report = await run_soak(config)
    assert report.passed, report.render()
    assert sum(broker.killed for broker in report.brokers) == config.rounds
    assert report.ledger.pushes_acked > 0
    assert report.ledger.completions_acked > 0
