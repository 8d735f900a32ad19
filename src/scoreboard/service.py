"""The leaderboard service, independent of HTTP: its parts, built and started together.

    writes     (writes.py)     what requests ask of the writer
    writer     (batches.py)    the group commit's work, in and after its transaction
    reads      (reads.py)      pages, entries, neighbours; the snapshots hubs push
    boards     (boards.py)     the live boards this instance knows
    seasons    (seasons.py)    resets on schedule, committed once
    standings  (standings.py)  closed seasons' final standings, stored and read
    velocity, refusals         detection (detection.py)

The store is the truth; the ranking is a cache of it, rebuilt at start (and by the
failover ranking when Redis comes back).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from scoreboard.batches import BatchWork, alone
from scoreboard.boards import BoardCatalog
from scoreboard.broker.base import Broker, Message, Notice
from scoreboard.cursors import CursorCodec
from scoreboard.detection import Velocity
from scoreboard.errors import NotFound
from scoreboard.groupcommit import GroupCommitter
from scoreboard.jobs import Job, Outcome
from scoreboard.model import ActionKind, Board, Flag, UserRecord
from scoreboard.ranking.base import Ranking
from scoreboard.ratelimit import RateLimits
from scoreboard.reads import Reads
from scoreboard.seasons import Scheduler
from scoreboard.standings import Standings
from scoreboard.store.base import Store
from scoreboard.writes import Writes

ADMIN_VIEW_ROWS = 100

log = structlog.get_logger("scoreboard.service")


@dataclass(frozen=True, slots=True)
class AdminView:
    record: UserRecord
    rank: int | None  # on the default board
    flags: list[str]


async def load_ranking(store: Store, ranking: Ranking, boards: Sequence[Board]) -> int:
    """Rebuild every board's ranking from the store; how many entries it holds.

    The collector is off meanwhile: the millions of short-lived rows of a big board would
    otherwise set off full collections, each walking all of them (measured: 1 s of a
    million-entry rebuild). The ranking itself keeps no objects it would walk.
    """
    banned = await store.banned()
    entries = 0
    gc.disable()
    try:
        for board in boards:
            await ranking.rebuild(board, await store.entries(board), banned)
            entries += await ranking.count(board.id)
    finally:
        gc.enable()
    return entries


class Service:
    def __init__(
        self,
        store: Store,
        ranking: Ranking,
        limits: RateLimits,
        broker: Broker,
        observe_batch: Callable[[int], None] = lambda size: None,
        clock: Callable[[], float] = time.time,
        max_queue: int = 10_000,
        actions: Sequence[ActionKind] = (),
        require_action: bool = False,
        max_boards: int = 100,
        on_flag: Callable[[str], None] = lambda reason: None,
        on_rebuild: Callable[[float], None] = lambda seconds: None,
        on_board_gone: Callable[[str], None] = lambda board_id: None,
        on_reset: Callable[[int], None] = lambda closed: None,
        on_stored: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._on_board_gone = on_board_gone
        self.store = store
        self.ranking = ranking
        self.boards = BoardCatalog(store)
        self.reads = Reads(ranking, broker)
        self.standings = Standings(store, ranking, clock, on_stored)
        self._velocity = Velocity(store.points_since, clock)
        self._on_rebuild = on_rebuild
        self._broker = broker
        self.writer = BatchWork(ranking, self.reads, self.boards, broker, self._velocity,
                                self.standings, clock, max_boards, on_flag, on_board_gone,
                                on_reset)
        self._committer: GroupCommitter[Job, Outcome] = GroupCommitter(
            store, self.writer, self.writer.after_commit, observe_batch, max_queue=max_queue,
            alone=alone)
        self.writes = Writes(store, self._committer, limits, clock, actions, require_action)
        self.scheduler = Scheduler(self.boards, self._committer.submit, clock)
        self._tasks: list[asyncio.Task[None]] = []
        self._reloading: asyncio.Task[None] | None = None
        self._stale = False  # a notice came: the list of boards is read again
        broker.subscribe(self._heard)  # other instances' changes too
        broker.on_reconnect(self._reconnected)

    async def start(self) -> None:
        started = time.perf_counter()
        self.reads.cursors = CursorCodec(await self.store.secret("cursor"))
        boards = await self.boards.load()
        entries = await load_ranking(self.store, self.ranking, boards)
        self.boards.take_up = self._take_up  # from now on, each change as it is read
        self._on_rebuild(time.perf_counter() - started)
        log.info("ranking_rebuilt", boards=len(boards), entries=entries,
                 seconds=round(time.perf_counter() - started, 3))
        await self.refresh()
        self._committer.start()
        # Before the first request: resets missed while every instance was down, and
        # final standings that were not stored.
        await self.scheduler.catch_up()
        await self.standings.resume()
        self._tasks.append(asyncio.create_task(self._velocity.run(self.writes.flag),
                                               name="velocity"))
        self._tasks.append(asyncio.create_task(self.scheduler.run(), name="seasons"))

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._reloading] if self._reloading else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.standings.stop()
        await self._committer.stop()

    async def refresh(self, board_ids: set[str] | None = None) -> None:
        """Fresh snapshots of these boards (all: snapshots may have been missed)."""
        boards = self.boards.all()
        await self.reads.publish([b for b in boards if board_ids is None or b.id in board_ids])

    # -- boards changed on another instance

    def _heard(self, message: Message) -> None:
        self.reads.seen(message)
        if isinstance(message, Notice) and message.kind == "boards":
            self._stale = True  # notices while a read runs: one more read after it
            if self._reloading is None or self._reloading.done():
                self._reloading = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        while self._stale:
            self._stale = False
            try:
                await self.boards.load()
            except Exception:  # the next notice, reconnect or start tries again
                log.exception("boards_reload_failed")

    async def _reconnected(self) -> None:
        """The broker is back: notices may have been missed, and snapshots."""
        try:
            await self.boards.load()
        finally:
            await self.refresh()

    async def _take_up(self, changed: list[tuple[Board | None, Board]], gone: list[str]) -> None:
        """Boards made, reset or deleted elsewhere (or before this instance heard)."""
        fresh = set()
        for known, board in changed:
            if known is not None and board.season > known.season:
                await self.ranking.new_season(board)
                self.reads.forget(board.id)  # pages read while the ranking moved on
                fresh.add(board.id)
            elif known is None and await self.ranking.count(board.id) == 0:
                await self.ranking.rebuild(board, await self.store.entries(board), None)
                fresh.add(board.id)
        if fresh:
            await self.refresh(fresh)
        for board_id in gone:
            await self.ranking.drop(board_id)
            self.reads.forget(board_id)
            self._on_board_gone(board_id)

    # -- reads that are not the hot path

    async def board(self, board_id: str) -> Board:
        """A live board, or 404."""
        board = await self.boards.find(board_id)
        if board is None:
            raise NotFound(f"no board {board_id!r}", "unknown_board")
        return board

    async def admin_view(self, user_id: str) -> AdminView:
        record = await self.store.user_record(user_id, ADMIN_VIEW_ROWS)
        if not record.entries and not record.ledger and not record.events and not record.banned:
            raise NotFound(f"nothing is known of user {user_id!r}", "unknown_user")
        ranked = await self.ranking.get("default", user_id)
        return AdminView(record, ranked.rank if ranked else None, record.flags)

    async def suspicious(self) -> list[Flag]:
        """Flagged users, longest-flagged first: the store's, the same on every instance."""
        return await self.store.flags()

    async def ready(self) -> None:
        await self.store.ping()
