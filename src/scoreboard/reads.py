"""The read side: each board's pages, a user's entries and neighbours, and the snapshots
every instance's hub pushes when a board's top 10 changes.

A board's first pages are serialised once and kept (with their ETag) until its top
changes here or a newer snapshot arrives from another instance; the hot path of
``GET /scores`` is a dictionary lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from scoreboard.broker.base import Broker, Message, Snapshot
from scoreboard.cursors import CursorCodec
from scoreboard.errors import NotFound
from scoreboard.etags import etag_of
from scoreboard.model import Board, Entry, RankedUser
from scoreboard.ranking.base import Ranking, Top

LIVE_TOP = 10  # what a snapshot carries: the top 10


@dataclass(frozen=True, slots=True)
class Page:
    """A pre-serialised page of a board, its ETag, the ranking's version it was read at,
    and the cursor of the next page (None on the last page)."""

    body: bytes
    etag: str
    version: int
    next_cursor: str | None


class Reads:
    def __init__(self, ranking: Ranking, broker: Broker) -> None:
        self._ranking = ranking
        self._broker = broker
        self._pages: dict[tuple[str, int], Page] = {}
        self.cursors: CursorCodec | None = None  # once the store gave its secret

    async def page(self, board: Board, limit: int, after: Entry | None = None) -> Page:
        if after is not None:  # later pages are read when asked: nothing to invalidate
            return self._make(board, await self._ranking.top(board.id, limit, after))
        page = self._pages.get((board.id, limit))
        if page is None:
            page = self._pages[(board.id, limit)] = self._make(
                board, await self._ranking.top(board.id, limit))
        return page

    def _make(self, board: Board, top: Top) -> Page:
        body = orjson.dumps([e.as_dict() for e in top.entries])
        cursor = None
        if top.next_after is not None and self.cursors is not None:
            cursor = self.cursors.encode(board, top.next_after)
        return Page(body, etag_of(body), top.version, cursor)

    async def entry(self, board_id: str, user_id: str) -> RankedUser:
        ranked = await self._ranking.get(board_id, user_id)
        if ranked is None:
            raise NotFound(f"no entry for user {user_id!r}", "unknown_user")
        return ranked

    async def around(self, board_id: str, user_id: str, above: int,
                     below: int) -> list[RankedUser]:
        found = await self._ranking.around(board_id, user_id, above, below)
        if found is None:
            raise NotFound(f"no entry for user {user_id!r}", "unknown_user")
        return found

    async def ranks(self, board_id: str, user_ids: list[str]) -> list[RankedUser]:
        return await self._ranking.ranks(board_id, user_ids)

    async def count(self, board_id: str) -> int:
        return await self._ranking.count(board_id)

    async def user_boards(self, boards: list[Board],
                          user_id: str) -> list[tuple[Board, RankedUser]]:
        """The user's entry on each of ``boards`` that has one, in the given order."""
        found = []
        for board in boards:
            ranked = await self._ranking.get(board.id, user_id)
            if ranked is not None:
                found.append((board, ranked))
        return found

    async def publish(self, boards: list[Board]) -> None:
        """The boards' tops changed here (or snapshots may have been missed): read each
        again and tell every instance. Hubs skip a top 10 they already show."""
        await self._broker.publish(*await self.snapshots(boards))

    async def snapshots(self, boards: list[Board]) -> list[Snapshot]:
        """Each board's top 10 read again (its cached pages dropped), as a snapshot."""
        made = []
        for board in boards:
            self.forget(board.id)
            top = await self.page(board, LIVE_TOP)
            made.append(Snapshot(board.id, top.version, top.body, board.season,
                                 board.season_started_ms))
        return made

    def forget(self, board_id: str) -> None:
        """A board gone (deleted, or its season closed): its pages with it."""
        for key in [key for key in self._pages if key[0] == board_id]:
            del self._pages[key]

    def seen(self, message: Message) -> None:
        """A message from any instance: a board's cached pages older than its new
        snapshot are stale (a new season's versions are above the last one's)."""
        if not isinstance(message, Snapshot):
            return
        for key in [k for k, page in self._pages.items()
                    if k[0] == message.board and page.version < message.version]:
            del self._pages[key]
