"""FailoverRanking: Redis while it answers, the store while it does not.

API.md, "Operations": with Redis down the service degrades, it does not stop. Writes
are acknowledged as always (the store is the truth); reads and the ranks in answers
come from the store; the board is re-read every poll, since other instances' writes
reach this one only through the store. A watcher checks Redis every poll: when it is
back, or answers but lost its data, the ranking is rebuilt from the store, its version
raised above any this instance showed, and ``on_change`` publishes a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog

from scoreboard.errors import describe
from scoreboard.model import RankedUser, UserTotal
from scoreboard.ranking.base import Top, next_version
from scoreboard.ranking.redis import RedisRanking
from scoreboard.redislink import FAILURES, RedisLink
from scoreboard.store.base import Store, Transaction

log = structlog.get_logger("scoreboard.ranking")


class FailoverRanking:
    def __init__(self, redis: RedisRanking, link: RedisLink, store: Store,
                 poll_seconds: float = 0.5) -> None:
        self._redis = redis
        self._link = link
        self._store = store
        self._poll = poll_seconds
        self._version = 0  # the largest version this instance handed out
        # Writes go to Redis from before a rebuild reads the store, so none falls between
        # the two; reads (link.up) only once the rebuild is complete.
        self._mirroring = False
        self._restoring = False
        # What this instance committed that Redis did not take (away, or refusing while
        # its board is rebuilt), newest per user: ("total", t), ("ban", None) or
        # ("unban", t). Applied once Redis has the board again.
        self._unmirrored: dict[str, tuple[str, UserTotal | None]] = {}

    async def rebuild(self, totals: Iterable[UserTotal], banned: set[str]) -> None:
        self._mirroring = True
        await self._rebuild(totals, banned)

    async def apply(self, totals: Sequence[UserTotal]) -> bool:
        if self._mirroring:
            try:
                return await self._redis.apply(totals)
            except FAILURES as error:
                self._lost(error)
        for total in totals:
            kind, held = self._unmirrored.get(total.user_id, ("total", None))
            if kind != "ban" and (held is None or held.seq < total.seq):
                self._unmirrored[total.user_id] = (kind, total)
        return True  # the board is read from the store: any write may have changed it

    async def ban(self, user_id: str) -> bool:
        if self._mirroring:
            try:
                return await self._redis.ban(user_id)
            except FAILURES as error:
                self._lost(error)
        self._unmirrored[user_id] = ("ban", None)
        return True

    async def unban(self, user_id: str, total: UserTotal | None) -> bool:
        if self._mirroring:
            try:
                return await self._redis.unban(user_id, total)
            except FAILURES as error:
                self._lost(error)
        self._unmirrored[user_id] = ("unban", total)
        return True

    async def top(self, limit: int) -> Top:
        if self._link.up:
            try:
                top = await self._redis.top(limit)
                self._version = max(self._version, top.version)
                return top
            except FAILURES as error:
                self._lost(error)
        self._version = next_version(self._version)
        return Top(self._version, await self._store.top(limit))

    async def get(self, user_id: str) -> RankedUser | None:
        if self._link.up:
            try:
                return await self._redis.get(user_id)
            except FAILURES as error:
                self._lost(error)
        return await self._store.ranked(user_id)

    async def ranks_after(self, tx: Transaction, totals: Sequence[UserTotal]) -> list[int]:
        if self._link.up:
            try:
                return await self._redis.ranks_after(tx, totals)
            except FAILURES as error:
                self._lost(error)
        return [await tx.rank_of(t) for t in totals]

    async def watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Check Redis every poll, for as long as the service runs."""
        while True:
            await asyncio.sleep(self._poll)
            try:
                state = await self._state()
                if state == "ok" and self._link.up:
                    continue
                if state != "away":
                    await self._restore()
                await on_change()  # a fresh snapshot: rebuilt, or re-read from the store
            except Exception:  # the watcher must outlive any one failure
                log.exception("redis_watch_failed")

    async def _state(self) -> str:
        """"ok", "empty" (answers, but lost the board: restarted empty or flushed), "away"."""
        try:
            if await self._redis.has_board():
                return "ok"
        except FAILURES as error:
            self._lost(error)
            return "away"
        self._lost("Redis answers but holds no board (restarted empty or flushed)")
        return "empty"

    async def _restore(self) -> None:
        """Rebuild from the store. Writes go to Redis again from before the store is
        read; one committed after the read but refused while the board is rebuilt is
        kept in ``_unmirrored`` and lands at the end of the rebuild."""
        started = time.perf_counter()
        self._mirroring = self._restoring = True
        try:
            totals, banned = await self._store.totals(), await self._store.banned()
            rebuilt = await self._rebuild(totals, banned)
        finally:
            self._restoring = False
        if rebuilt:
            log.info("ranking_rebuilt", source="store", users=len(totals),
                     seconds=round(time.perf_counter() - started, 3))

    async def _rebuild(self, totals: Iterable[UserTotal], banned: set[str]) -> bool:
        """Merge into Redis, then what Redis missed; reads go to Redis once it holds all."""
        try:
            await self._redis.rebuild(totals, banned, floor=self._version)
            while self._unmirrored:
                held = dict(self._unmirrored)
                await self._redis.apply([t for kind, t in held.values()
                                         if kind == "total" and t is not None])
                for user_id, (kind, total) in held.items():
                    if kind == "ban":
                        await self._redis.ban(user_id)
                    elif kind == "unban":
                        await self._redis.unban(user_id, total)
                for user_id, done in held.items():  # unless a newer one came meanwhile
                    if self._unmirrored.get(user_id) is done:
                        del self._unmirrored[user_id]
        except FAILURES as error:
            self._mirroring = False
            log.warning("redis_rebuild_failed", detail=describe(error))
            self._link.lost(error)
            return False
        self._link.back()
        return True

    def _lost(self, reason: BaseException | str) -> None:
        if self._restoring:
            return  # the board is being rebuilt: refusals are expected, writes are kept
        self._mirroring = False
        self._link.lost(reason)
