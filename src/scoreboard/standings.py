"""Final standings: a closed season's ranks, stored once, then served as they are.

Once a reset commits, nothing writes to the season it closed (every write goes to the
season current when it commits; reverts and bans change the current season only), so
its standings are fixed: its entries in rank order, without the users banned when it
ended. They are stored in chunks, each chunk a short transaction of its own, so the
writer never waits for more than one; every rank is the same whoever stores it, so an
instance that resumes (after a crash) or races another stores the same rows. When all
are stored the season is marked so, and the ranking lets go of what it kept of it.

Reads of a closed season come from the stored standings, and never change: the season
and each page are kept once read (bounded caches) and served as immutable.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import orjson
import structlog

from scoreboard.errors import NotFound, ScoreboardError, StoreUnavailable
from scoreboard.etags import etag_of
from scoreboard.model import Board, RankedUser, Season
from scoreboard.ranking.base import Ranking
from scoreboard.store.base import Store

CHUNK = 1000  # rows per transaction: the writer waits for one at most (~12 ms, SQLite)
RETRY_SECONDS = 2.0
WAIT_FOR_STORED = 5.0  # how long a read of a just-closed season waits for its standings
CACHED_PAGES = 1024  # of closed seasons' pages, and of the stored seasons themselves
K = TypeVar("K")
V = TypeVar("V")

log = structlog.get_logger("scoreboard.standings")


class StandingsNotReady(ScoreboardError):
    status = 503
    title = "Service Unavailable"
    retry_after = 2


class FinalPage:
    """A page of final standings: its body, ETag and the rank it ended on (None: the last
    page)."""

    __slots__ = ("body", "etag", "last_rank")

    def __init__(self, rows: list[RankedUser], more: bool) -> None:
        self.body = orjson.dumps([r.as_dict() for r in rows])
        self.etag = etag_of(self.body)
        self.last_rank = rows[-1].rank if more and rows else None


class Standings:
    def __init__(self, store: Store, ranking: Ranking, clock: Callable[[], float],
                 on_stored: Callable[[float], None] = lambda seconds: None) -> None:
        self._store = store
        self._ranking = ranking
        self._clock = clock
        self._on_stored = on_stored
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._pages: OrderedDict[tuple[str, int, int, int], FinalPage] = OrderedDict()
        self._seasons: OrderedDict[tuple[str, int], Season] = OrderedDict()  # stored ones
        self._closing = False

    # -- storing

    async def resume(self) -> None:
        """Store whatever closed season is not stored yet (a crash, or every instance
        down when one closed)."""
        boards = {board.id: board for board in await self._store.boards()}
        for season in await self._store.unstored():
            board = boards.get(season.board)
            if board is not None:
                self.store_later(board, season.season)

    def store_later(self, board: Board, season: int) -> None:
        key = (board.id, season)
        if key not in self._tasks and not self._closing:
            self._tasks[key] = asyncio.create_task(self._store_until_done(board, season),
                                                   name=f"standings-{board.id}-{season}")

    async def stop(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _store_until_done(self, board: Board, season_no: int) -> None:
        try:
            while True:
                try:
                    await self._store_season(board, season_no)
                    return
                except StoreUnavailable as error:
                    log.warning("standings_store_failed", board=board.id, season=season_no,
                                reason=error.reason)
                await asyncio.sleep(RETRY_SECONDS)
        finally:
            self._tasks.pop((board.id, season_no), None)

    async def _store_season(self, board: Board, season_no: int) -> None:
        season = await self._store.season(board.id, season_no)
        if season is None or season.ended_ms is None or season.stored_ms is not None:
            return
        started = time.perf_counter()
        rank = 1
        async for rows in self._store.final_standings(board, season, CHUNK):
            await self._store.add_standings(board.id, season_no, rank, rows)
            rank += len(rows)
        async with self._store.transaction() as tx:
            await tx.mark_stored(board.id, season_no, int(self._clock() * 1000))
        seconds = time.perf_counter() - started
        self._on_stored(seconds)
        log.info("season_stored", board=board.id, season=season_no, entries=rank - 1,
                 seconds=round(seconds, 3))
        await self._ranking.close_season(board.id, season_no)

    # -- reading

    async def closed(self, board: Board, season_no: int) -> Season:
        """A closed season of the board whose standings are stored: waits a little for a
        season that closed a moment ago; 404 for one that has not closed."""
        key = (board.id, season_no)
        known = _cached(self._seasons, key)
        if known is not None:
            return known
        deadline = time.monotonic() + WAIT_FOR_STORED
        while True:
            season = await self._store.season(board.id, season_no)
            if season is None or season.ended_ms is None:
                raise NotFound(f"no closed season {season_no} of board {board.id!r}",
                               "unknown_season")
            if season.stored_ms is not None:
                _keep(self._seasons, key, season)
                return season
            left = deadline - time.monotonic()
            if left <= 0:
                raise StandingsNotReady(
                    f"the final standings of season {season_no} are being stored; "
                    "retry shortly", "standings_pending")
            storing = self._tasks.get((board.id, season_no))
            if storing is None:  # stored by another instance: look again shortly
                await asyncio.sleep(min(left, 0.05))
            else:
                await asyncio.wait([storing], timeout=left)

    async def page(self, board: Board, season: Season, limit: int,
                   after_rank: int = 0) -> FinalPage:
        key = (board.id, season.season, limit, after_rank)
        page = _cached(self._pages, key)
        if page is None:
            rows = await self._store.standings(board.id, season.season, limit + 1, after_rank)
            page = FinalPage(rows[:limit], len(rows) > limit)
            _keep(self._pages, key, page)
        return page

    async def standing(self, board: Board, season: Season, user_id: str) -> RankedUser:
        found = await self._store.standing(board.id, season.season, user_id)
        if found is None:
            raise NotFound(f"user {user_id!r} has no entry in season {season.season}",
                           "unknown_user")
        return found


def _cached(cache: OrderedDict[K, V], key: K) -> V | None:
    """What ``cache`` holds for ``key``, now its most recently used."""
    found = cache.get(key)
    if found is not None:
        cache.move_to_end(key)
    return found


def _keep(cache: OrderedDict[K, V], key: K, value: V) -> None:
    """Keep ``value``, dropping the least recently used past ``CACHED_PAGES``."""
    cache[key] = value
    if len(cache) > CACHED_PAGES:
        cache.popitem(last=False)
