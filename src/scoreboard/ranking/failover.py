"""FailoverRanking: Redis while it answers, the store while it does not.

API.md, "Operations": with Redis down the service degrades, it does not stop. Writes
are acknowledged as always (the store is the truth); reads and the ranks in answers
come from the store; the boards are re-read every poll, since other instances' writes
reach this one only through the store. A watcher checks Redis every poll: when it is
back, or answers but lost its data, every board is rebuilt from the store, its version
raised above any this instance showed, and ``on_change`` publishes fresh snapshots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog

from scoreboard.errors import describe
from scoreboard.model import Board, Entry, RankedUser
from scoreboard.ranking.base import Top, next_version
from scoreboard.ranking.memory import window
from scoreboard.ranking.redis import RedisRanking
from scoreboard.redislink import FAILURES, RedisLink
from scoreboard.store.base import Slot, Store, Transaction

log = structlog.get_logger("scoreboard.ranking")


class FailoverRanking:
    def __init__(self, redis: RedisRanking, link: RedisLink, store: Store,
                 poll_seconds: float = 0.5) -> None:
        self._redis = redis
        self._link = link
        self._store = store
        self._poll = poll_seconds
        self._boards: dict[str, Board] = {}
        self._versions: dict[str, int] = {}  # the largest version this instance showed
        # Writes go to Redis from before a rebuild reads the store, so none falls between
        # the two; reads (link.up) only once the rebuild is complete.
        self._mirroring = False
        self._restoring = False
        # What this instance committed that Redis did not take (away, or refusing while
        # its boards are rebuilt), newest per slot (None: the entry went) and per user
        # (None: banned; entries: unbanned with them). Applied once Redis is back.
        self._entries: dict[Slot, Entry | None] = {}
        self._bans: dict[str, list[Entry] | None] = {}
        # A board's tops read from the store, one at a time: each numbered and read
        # under one lock, so a higher version never holds an older read (two reads on two
        # pooled connections can run in either order, and a stream must not go back).
        self._store_tops: dict[str, asyncio.Lock] = {}

    async def rebuild(self, board: Board, entries: Iterable[Entry],
                      banned: set[str] | None) -> None:
        self._boards[board.id] = board
        self._redis.define(board)
        self._mirroring = True
        await self._rebuild({board.id: list(entries)}, banned)

    async def drop(self, board_id: str) -> None:
        self._boards.pop(board_id, None)
        try:
            await self._redis.drop(board_id)
        except FAILURES as error:
            self._lost(error)  # its keys stay until Redis is rebuilt: nothing reads them

    async def new_season(self, board: Board) -> bool:
        known = self._boards.get(board.id)
        if known is not None and known.season >= board.season:
            return False
        self._boards[board.id] = board
        self._versions[board.id] = next_version(self._versions.get(board.id, 0))
        if self._mirroring:
            try:
                await self._redis.new_season(board)
            except FAILURES as error:
                self._lost(error)  # rebuilt from the store, at its season, once back
        return True

    async def close_season(self, board_id: str, season: int) -> None:
        if self._mirroring:
            try:
                await self._redis.close_season(board_id, season)
            except FAILURES as error:
                self._lost(error)

    async def apply(self, entries: Sequence[Entry]) -> set[str]:
        if self._mirroring:
            try:
                return await self._redis.apply(entries)
            except FAILURES as error:
                self._lost(error)
        for entry in entries:
            held = self._entries.get((entry.board, entry.user_id))
            if held is None or held.seq < entry.seq:
                self._entries[(entry.board, entry.user_id)] = entry
        return {entry.board for entry in entries}  # read from the store: any may have moved

    async def remove(self, board_id: str, user_id: str) -> bool:
        if self._mirroring:
            try:
                return await self._redis.remove(board_id, user_id)
            except FAILURES as error:
                self._lost(error)
        self._entries[(board_id, user_id)] = None
        return True

    async def ban(self, user_id: str) -> set[str]:
        if self._mirroring:
            try:
                return await self._redis.ban(user_id)
            except FAILURES as error:
                self._lost(error)
        self._bans[user_id] = None
        return set(self._boards)

    async def unban(self, user_id: str, entries: Sequence[Entry]) -> set[str]:
        if self._mirroring:
            try:
                return await self._redis.unban(user_id, entries)
            except FAILURES as error:
                self._lost(error)
        self._bans[user_id] = list(entries)
        return set(self._boards)

    # -- reads: Redis while it is up, else the store

    async def top(self, board_id: str, limit: int, after: Entry | None = None) -> Top:
        if self._link.up:
            try:
                top = await self._redis.top(board_id, limit, after)
                self._versions[board_id] = max(self._versions.get(board_id, 0), top.version)
                return top
            except FAILURES as error:
                self._lost(error)
        board = self._boards.get(board_id)
        if board is None:
            return Top(0, [])
        async with self._store_tops.setdefault(board_id, asyncio.Lock()):
            version = self._versions[board_id] = next_version(self._versions.get(board_id, 0))
            rows = await self._store.top(board, limit + 1, after)
        offset = 0 if after is None else await self._store.ahead(board, after.score,
                                                                 after.seq + 1)
        entries = [RankedUser(offset + i + 1, r.user_id, r.name, r.score, r.seq)
                   for i, r in enumerate(rows[:limit])]
        last = entries[-1] if len(rows) > limit else None
        return Top(version, entries, None if last is None else
                   Entry(board_id, board.season, last.user_id, last.score, last.seq))

    async def get(self, board_id: str, user_id: str) -> RankedUser | None:
        if self._link.up:
            try:
                return await self._redis.get(board_id, user_id)
            except FAILURES as error:
                self._lost(error)
        board = self._boards.get(board_id)
        return None if board is None else await self._store.ranked(board, user_id)

    async def around(self, board_id: str, user_id: str, above: int,
                     below: int) -> list[RankedUser] | None:
        if self._link.up:
            try:
                return await self._redis.around(board_id, user_id, above, below)
            except FAILURES as error:
                self._lost(error)
        board = self._boards.get(board_id)
        me = None if board is None else await self._store.ranked(board, user_id)
        if board is None or me is None:
            return None
        start, stop = window(me.rank - 1, above, below, await self._store.count(board))
        return await self._store.top(board, stop - start, offset=start)

    async def ranks(self, board_id: str, user_ids: Sequence[str]) -> list[RankedUser]:
        if self._link.up:
            try:
                return await self._redis.ranks(board_id, user_ids)
            except FAILURES as error:
                self._lost(error)
        board = self._boards.get(board_id)
        if board is None:
            return []
        found = [await self._store.ranked(board, u) for u in dict.fromkeys(user_ids)]
        return sorted((r for r in found if r is not None), key=lambda r: r.rank)

    async def count(self, board_id: str) -> int:
        if self._link.up:
            try:
                return await self._redis.count(board_id)
            except FAILURES as error:
                self._lost(error)
        board = self._boards.get(board_id)
        return 0 if board is None else await self._store.count(board)

    async def ranks_after(self, tx: Transaction, boards: dict[str, Board],
                          entries: Sequence[Entry]) -> list[int]:
        if self._link.up:
            try:
                return await self._redis.ranks_after(tx, boards, entries)
            except FAILURES as error:
                self._lost(error)
        return [await tx.rank_of(boards[e.board], e) for e in entries]

    # -- watching Redis

    async def watch(self, on_change: Callable[[set[str]], Awaitable[None]]) -> None:
        """Check Redis every poll, for as long as the service runs."""
        while True:
            await asyncio.sleep(self._poll)
            try:
                state = await self._state()
                if state == "ok" and self._link.up:
                    continue
                if state != "away":
                    await self._restore()
                await on_change(set(self._boards))  # fresh snapshots: rebuilt, or the store's
            except Exception:  # the watcher must outlive any one failure
                log.exception("redis_watch_failed")

    async def _state(self) -> str:
        """"ok", "empty" (answers, but lost a board: restarted empty or flushed), "away"."""
        try:
            if await self._redis.has_boards():
                return "ok"
        except FAILURES as error:
            self._lost(error)
            return "away"
        self._lost("Redis answers but holds no board (restarted empty or flushed)")
        return "empty"

    async def _restore(self) -> None:
        """Rebuild every board from the store. Writes go to Redis again from before the
        store is read; one committed after the read but refused while the boards are
        rebuilt is kept and lands at the end of the rebuild."""
        started = time.perf_counter()
        self._mirroring = self._restoring = True
        try:
            boards = await self._store.boards()
            self._boards = {board.id: board for board in boards}
            for board in boards:
                self._redis.define(board)
            entries = {board.id: list(await self._store.entries(board)) for board in boards}
            rebuilt = await self._rebuild(entries, await self._store.banned())
        finally:
            self._restoring = False
        if rebuilt:
            log.info("ranking_rebuilt", source="store", boards=len(entries),
                     entries=sum(len(rows) for rows in entries.values()),
                     seconds=round(time.perf_counter() - started, 3))

    async def _rebuild(self, entries: dict[str, list[Entry]], banned: set[str] | None) -> bool:
        """Merge into Redis, then what Redis missed; reads go to Redis once it holds all."""
        try:
            for board_id, rows in entries.items():
                await self._redis.rebuild(self._boards[board_id], rows, banned,
                                          floor=self._versions.get(board_id, 0))
            while self._entries or self._bans:
                bans, held = dict(self._bans), dict(self._entries)
                for user_id, unbanned in bans.items():
                    if unbanned is None:
                        await self._redis.ban(user_id)
                    else:
                        await self._redis.unban(user_id, unbanned)
                await self._redis.apply([e for e in held.values() if e is not None])
                for board_id, user_id in (slot for slot, e in held.items() if e is None):
                    await self._redis.remove(board_id, user_id)
                for user_id, done in bans.items():  # unless a newer one came meanwhile
                    if self._bans.get(user_id, done) is done:
                        self._bans.pop(user_id, None)
                for slot, entry in held.items():
                    if self._entries.get(slot, entry) is entry:
                        self._entries.pop(slot, None)
        except FAILURES as error:
            self._mirroring = False
            log.warning("redis_rebuild_failed", detail=describe(error))
            self._link.lost(error)
            return False
        self._link.back()
        return True

    def _lost(self, reason: BaseException | str) -> None:
        if self._restoring:
            return  # the boards are being rebuilt: refusals are expected, writes are kept
        self._mirroring = False
        self._link.lost(reason)
