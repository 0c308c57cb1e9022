"""Shared pytest configuration: async tests run on anyio's asyncio backend.

grpclib and obstore's async API need asyncio, so trio is never parametrised here.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
