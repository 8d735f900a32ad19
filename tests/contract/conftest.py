"""The fixtures the contract suites share: the store on each backend in turn, and the
ranking on each backend (``h``; ``mirror``, the ones that keep versions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scoreboard.store.base import Store
from scoreboard.store.postgres import PostgresStore
from scoreboard.store.sqlite import SQLiteStore
from tests.contract.rankings import BACKENDS, Harness, harness
from tests.support import postgres_schema

STORES = ["sqlite", "postgresql"]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        backend: Store = SQLiteStore(tmp_path / "contract.db")
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()
        return
    async with postgres_schema() as url:  # fails, never skips, without a PostgreSQL
        backend = PostgresStore(url)
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()


@pytest.fixture(params=BACKENDS)
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(request.param, tmp_path) as made:
        if request.param == "degraded":
            made.degraded = True  # type: ignore[attr-defined]
        yield made


@pytest.fixture(params=[b for b in BACKENDS if b != "degraded"])
async def mirror(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """The rankings that keep versions and watch the top (degraded, the store's board is
    re-read whole: every read is a new version, any write may have moved it)."""
    async with harness(request.param, tmp_path) as made:
        yield made
