"""The live boards, as this instance knows them.

Loaded from the store at start; kept current by the board changes made here, and by
the notices other instances publish for theirs (the list is then read again). A board
this instance does not know yet is looked up in the store before it is called unknown
(at most once a second), so a board made a moment ago elsewhere is found either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from scoreboard.model import Board
from scoreboard.store.base import Store

RELOAD_AT_MOST_EVERY = 1.0  # seconds between reloads for an unknown board id


class BoardCatalog:
    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._boards: dict[str, Board] = {}
        self._loaded_at = float("-inf")
        self.changed = asyncio.Event()  # set at every change (the season scheduler waits)

    async def load(self) -> tuple[list[Board], list[str]]:
        """Read the list again: the boards that are new or changed here, and the ids of
        those gone."""
        self._loaded_at = self._clock()
        fresh = {board.id: board for board in await self._store.boards()}
        changed = [b for b in fresh.values() if self._boards.get(b.id) != b]
        gone = [board_id for board_id in self._boards if board_id not in fresh]
        self._boards = fresh
        if changed or gone:
            self.changed.set()
        return changed, gone

    def get(self, board_id: str) -> Board | None:
        return self._boards.get(board_id)

    async def find(self, board_id: str) -> Board | None:
        """The board, looking in the store when it is not known here yet."""
        board = self._boards.get(board_id)
        if board is None and self._clock() - self._loaded_at >= RELOAD_AT_MOST_EVERY:
            await self.load()
            board = self._boards.get(board_id)
        return board

    def all(self) -> list[Board]:
        """Every live board, ordered by id."""
        return [self._boards[board_id] for board_id in sorted(self._boards)]

    def __len__(self) -> int:
        return len(self._boards)

    def put(self, board: Board) -> None:
        self._boards[board.id] = board
        self.changed.set()

    def remove(self, board_id: str) -> None:
        self._boards.pop(board_id, None)
        self.changed.set()
