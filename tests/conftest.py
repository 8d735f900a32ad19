from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.support import Server, running, settings_for


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
