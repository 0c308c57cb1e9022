"""Shared pytest configuration: async tests run on anyio's asyncio backend.

grpclib and obstore's async API need asyncio, so trio is never parametrised here.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# Model tests: "ci" (the default) runs hundreds of examples; "long" is for local soaks:
#   HYPOTHESIS_PROFILE=long make pytest PYTEST_ARGS=tests/core/test_model.py
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=5000)
settings.register_profile("quick", parent=settings.get_profile("ci"), max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
