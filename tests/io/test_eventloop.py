"""Which event loop the command lines run on: the flag, else the environment, else
asyncio's own (``auto``: uvloop when installed)."""

from __future__ import annotations

import pytest

from osqueue_io import eventloop


def test_the_flag_wins_then_the_environment_then_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventloop, "uvloop_installed", lambda: True)
    monkeypatch.setenv(eventloop.ENV_VAR, "asyncio")
    assert eventloop.resolve("uvloop") == "uvloop"
    assert eventloop.resolve(None) == "asyncio"
    monkeypatch.delenv(eventloop.ENV_VAR)
    assert eventloop.resolve(None) == "asyncio"
    assert eventloop.resolve("auto") == "uvloop"
    assert eventloop.backend_options("uvloop") == {"use_uvloop": True}
    assert eventloop.backend_options("asyncio") == {}


def test_without_uvloop_auto_is_asyncio_and_uvloop_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eventloop, "uvloop_installed", lambda: False)
    monkeypatch.delenv(eventloop.ENV_VAR, raising=False)
    assert eventloop.resolve("auto") == "asyncio"
    with pytest.raises(ValueError, match="osqueue\\[fast\\]"):
        eventloop.resolve("uvloop")
    with pytest.raises(ValueError, match="not one of"):
        eventloop.resolve("trio")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_run_runs_on_the_loop_asked_for(loop: str) -> None:
    if loop == "uvloop" and not eventloop.uvloop_installed():
        pytest.skip("uvloop is not installed")

    async def kind() -> str:
        import asyncio

        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert eventloop.run(kind, loop) == loop
