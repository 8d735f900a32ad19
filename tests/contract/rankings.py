"""The ranking harness the Ranking contract suites share: each backend (memory, Redis,
failover up and degraded) beside, for the failover ones, the SQLite store it falls back
to, written as the group-commit writer writes it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from redis.asyncio import Redis

from scoreboard.model import Board, BoardSpec, Entry
from scoreboard.ranking.base import Ranking
from scoreboard.ranking.failover import FailoverRanking
from scoreboard.ranking.memory import MemoryRanking
from scoreboard.ranking.redis import RedisRanking
from scoreboard.redislink import RedisLink
from scoreboard.store.base import BatchWrite, Store
from scoreboard.store.sqlite import SQLiteStore
from tests.support import REDIS, redis_prefix

BACKENDS = ["memory", "redis", "failover", "degraded"]
ENTRY_SEQ = "SELECT seq FROM entries WHERE board = ? AND season = ? AND user_id = ?"

BOARDS = {b.id: b for b in (
    Board(BoardSpec("inc", "Points"), 1, 0),
    Board(BoardSpec("golf", "Golf", "asc", "increment"), 1, 0),
    Board(BoardSpec("fast", "Speedrun", "asc", "best"), 1, 0),
    Board(BoardSpec("high", "High score", "desc", "best"), 1, 0),
    Board(BoardSpec("last", "Last", "desc", "set"), 1, 0),
)}


class Harness:
    """A ranking, and for the failover backends the store it falls back to, written as
    the group-commit writer writes it."""

    def __init__(self, ranking: Ranking, store: Store | None) -> None:
        self.ranking = ranking
        self.store = store
        self.boards = dict(BOARDS)  # as the store has them now

    async def reset(self, board_id: str, at_ms: int) -> Board:
        """Close the board's season in the store (when there is one): the board after."""
        board = self.boards[board_id]
        moved = Board(board.spec, board.season + 1, at_ms)
        if self.store is not None:
            async with self.store.transaction() as tx:
                assert await tx.reset_season(board, at_ms) == moved
        self.boards[board_id] = moved
        return moved

    async def define(self, boards: Sequence[Board], banned: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        if self.store is not None:
            async with self.store.transaction() as tx:
                for board in boards:
                    await tx.create_board(board.spec, 0, 100)
                for user_id in banned:
                    await tx.ban(user_id, "root", 0)
        for board in boards:
            await self.ranking.rebuild(board, [], set(banned))

    async def commit(self, entries: Sequence[Entry]) -> tuple[list[int], set[str]]:
        """Write ``entries`` as one batch: the ranks previewed before the commit, and the
        boards whose watched top changed."""
        boards = {e.board: self.boards[e.board] for e in entries}
        if self.store is None:
            ranks = await self.ranking.ranks_after(None, boards, entries)  # type: ignore[arg-type]
            return ranks, await self.ranking.apply(entries)
        async with self.store.transaction() as tx:
            batch = BatchWrite()
            for e in entries:  # the store is the truth: a stale entry never reaches it
                held = await tx.rows(ENTRY_SEQ, (e.board, e.season, e.user_id))  # type: ignore[attr-defined]
                if not held or held[0][0] < e.seq:
                    batch.entries.append((e, e.season, 0))
                if e.name:
                    batch.names[e.user_id] = e.name
            await tx.write(batch)
            ranks = await self.ranking.ranks_after(tx, boards, entries)
        return ranks, await self.ranking.apply(entries)


@contextlib.asynccontextmanager
async def harness(backend: str, tmp: Path) -> AsyncIterator[Harness]:
    if backend == "memory":
        yield Harness(MemoryRanking(), None)
        return
    async with redis_prefix() as prefix:
        client = Redis.from_url(REDIS)
        try:
            if backend == "redis":
                yield Harness(RedisRanking(client, prefix), None)
                return
            store = SQLiteStore(tmp / f"{prefix}.db")
            await store.open()
            link = RedisLink(REDIS, prefix)
            try:
                failover = FailoverRanking(RedisRanking(link.client, prefix), link, store)
                yield Harness(failover, store)
            finally:
                await link.close()
                await store.close()
        finally:
            await client.aclose()



async def define(h: Harness, *board_ids: str, banned: set[str] | None = None) -> None:
    await h.define([BOARDS[b] for b in board_ids], banned or set())
    if getattr(h, "degraded", False):
        link = h.ranking._link  # type: ignore[attr-defined]
        link.lost("the test takes Redis away")
