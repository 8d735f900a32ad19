"""The live boards, as this instance knows them.

Loaded from the store at start; kept current by the board changes made here, and by
the notices other instances publish for theirs (the list is then read again). A board
this instance does not know yet is looked up in the store before it is called unknown
(at most once a second), so a board made a moment ago elsewhere is found either way.

Every change a read of the list finds goes to one place, ``take_up`` (the service's:
build the new board's ranking, move to a new season, drop a deleted board), whichever
path read it. Reads are one at a time, and a read that overlapped a change made here
is done again: an older list never replaces a newer one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from scoreboard.model import Board
from scoreboard.store.base import Store

RELOAD_AT_MOST_EVERY = 1.0  # seconds between reloads for an unknown board id

# The boards a read found changed (each with the board as known before, None when new)
# and the ids of those gone.
TakeUp = Callable[[list[tuple[Board | None, Board]], list[str]], Awaitable[None]]


class BoardCatalog:
    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._boards: dict[str, Board] = {}
        self._loaded_at = float("-inf")
        self._edits = 0  # changes made here (put, remove)
        self._reading = asyncio.Lock()
        self.changed = asyncio.Event()  # set at every change (the season scheduler waits)
        self.take_up: TakeUp | None = None

    async def load(self) -> list[Board]:
        """Read the list again, hand what changed to ``take_up``; every board."""
        async with self._reading:
            while True:
                edits = self._edits
                fresh = {board.id: board for board in await self._store.boards()}
                if edits == self._edits:
                    break
            self._loaded_at = self._clock()
            changed = [(self._boards.get(b.id), b) for b in fresh.values()
                       if self._boards.get(b.id) != b]
            gone = [board_id for board_id in self._boards if board_id not in fresh]
            self._boards = fresh
            if changed or gone:
                self.changed.set()
                if self.take_up is not None:
                    await self.take_up(changed, gone)
            return self.all()

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
        self._edits += 1
        self.changed.set()

    def remove(self, board_id: str) -> None:
        self._boards.pop(board_id, None)
        self._edits += 1
        self.changed.set()
