"""The board catalog on a real SQLite store: every change a read finds reaches
``take_up`` once, whichever path read it, and an older list never replaces a newer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scoreboard.boards import BoardCatalog
from scoreboard.model import Board, BoardSpec
from scoreboard.store.sqlite import SQLiteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    made = SQLiteStore(tmp_path / "catalog.db")
    await made.open()
    try:
        yield made
    finally:
        await made.close()


async def create(store: SQLiteStore, board_id: str) -> Board:
    async with store.transaction() as tx:
        board = await tx.create_board(BoardSpec(board_id, board_id.title()), 0, 100)
    assert isinstance(board, Board)
    return board


class Seen:
    def __init__(self) -> None:
        self.changes: list[tuple[Board | None, Board]] = []
        self.gone: list[str] = []

    async def __call__(self, changed: list[tuple[Board | None, Board]], gone: list[str]) -> None:
        self.changes += changed
        self.gone += gone


async def test_a_board_found_on_a_lookup_is_taken_up(store: SQLiteStore) -> None:
    now = [0.0]
    catalog = BoardCatalog(store, clock=lambda: now[0])
    await catalog.load()
    seen = catalog.take_up = Seen()
    made = await create(store, "weekly")  # on another instance, say: no notice yet
    assert await catalog.find("weekly") is None  # the list was read just now
    now[0] += 1.0
    assert await catalog.find("weekly") == made
    assert seen.changes == [(None, made)]
    await catalog.load()  # the notice's read, later, finds nothing new
    assert seen.changes == [(None, made)]
    async with store.transaction() as tx:
        await tx.delete_board("weekly", 5)
    await catalog.load()
    assert seen.gone == ["weekly"] and catalog.get("weekly") is None


async def test_a_season_moved_on_is_handed_with_the_board_before(store: SQLiteStore) -> None:
    catalog = BoardCatalog(store)
    weekly = await create(store, "weekly")
    await catalog.load()
    seen = catalog.take_up = Seen()
    async with store.transaction() as tx:
        moved = await tx.reset_season(weekly, 1_000)
    assert moved is not None and moved.season == 2
    await catalog.load()
    assert seen.changes == [(weekly, moved)]


async def test_a_read_overlapping_a_change_made_here_is_done_again(store: SQLiteStore) -> None:
    catalog = BoardCatalog(store)
    await catalog.load()
    weekly = await create(store, "weekly")
    reads = 0
    boards = store.boards

    async def slow_boards() -> list[Board]:
        nonlocal reads
        reads += 1
        listed = await boards()
        if reads == 1:  # the writer moves the board on while this read is out
            async with store.transaction() as tx:
                moved = await tx.reset_season(weekly, 1_000)
            assert moved is not None
            catalog.put(moved)
            await asyncio.sleep(0)
        return listed

    store.boards = slow_boards  # type: ignore[method-assign]
    await catalog.load()
    assert reads == 2
    found = catalog.get("weekly")
    assert found is not None and found.season == 2  # not the list read before the reset
