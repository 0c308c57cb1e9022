"""Storage for the embedded-queue tests: memory, a local directory, and moto's S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.io.conftest import S3Server, fresh_prefix


@attrs.frozen
class Storage:
    """How to open one test's queue storage: a URL plus open_store options."""

    url: str
    options: dict[str, Any]


@pytest.fixture(params=["memory", "local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "memory":
        return Storage("memory://", {})
    if request.param == "local":
        return Storage(str(tmp_path / "queue"), {})
    moto: S3Server = request.getfixturevalue("moto_s3")
    return Storage(moto.url(fresh_prefix()), moto.options)
