from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.support import Server, end_children, new_serial, running, settings_for


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Every process a test starts (``support.spawn``) has ended when the test has:
    one still running is ended here and fails the test that left it."""
    started = new_serial()
    yield
    leaked = end_children(started)
    assert not leaked, f"the test left processes running: {leaked}"


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_run() -> Iterator[None]:
    yield
    leaked = end_children()
    assert not leaked, f"processes still running at the end of the run: {leaked}"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(settings_for(tmp_path)) as s:
        yield s


@pytest.fixture
def make_server(tmp_path: Path) -> Callable[..., AbstractAsyncContextManager[Server]]:
    """A server with settings overridden: ``async with make_server(rate_limit=...)``."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[Server]:
        return running(settings_for(tmp_path, **overrides))

    return make
