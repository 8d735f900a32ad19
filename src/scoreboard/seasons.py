"""Season resets: decided in the writer's own transaction, run on schedule by every
instance, committed once.

A reset closes the board's current season and opens the next, empty. The store decides
it: the board's row is locked and moved on only from the season expected, and the new
season's row is unique, so however many instances are due at once, one commits and the
others find it done. Writes are jobs of the same writer, so each commits wholly before
or after a reset: in the season current when it commits.

Every instance runs the ``Scheduler``: it sleeps until the next board is due and hands
the writer a reset for it. A reset that every instance missed (all were down) runs at
start, and each season it closes still ends at its scheduled time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from scoreboard.boards import BoardCatalog
from scoreboard.errors import ScoreboardError
from scoreboard.jobs import SeasonReset, SeasonsReset
from scoreboard.model import Board
from scoreboard.schedule import next_reset
from scoreboard.store.base import Transaction

# Periods closed in one transaction when many were missed (an hourly board after a
# long outage); the scheduler runs again at once for the rest.
MAX_RESETS_PER_TRANSACTION = 500
IDLE_SECONDS = 1.0  # the longest the scheduler sleeps: boards made meanwhile are seen

log = structlog.get_logger("scoreboard.seasons")


def due_at(board: Board) -> int | None:
    """When the board's current season ends on schedule (None: ``never``)."""
    return next_reset(board.spec.reset, board.spec.timezone, board.season_started_ms)


async def reset(tx: Transaction, job: SeasonReset, now_ms: int) -> SeasonsReset:
    board = await tx.board_to_change(job.board)
    if board is None:
        return SeasonsReset(None)
    closed: list[int] = []
    if job.admin is not None:  # now
        moved = await tx.reset_season(board, now_ms)
        if moved is not None:
            closed.append(board.season)
            await tx.audit(job.admin, "reset_board", board.id,
                           f"season {board.season} -> {moved.season}", now_ms)
            board = moved
        return SeasonsReset(board, closed)
    if board.season != job.season:
        return SeasonsReset(board)  # another instance reset it
    while len(closed) < MAX_RESETS_PER_TRANSACTION:
        ends = due_at(board)
        if ends is None or ends > now_ms:
            break
        moved = await tx.reset_season(board, ends)
        if moved is None:
            break
        closed.append(board.season)
        board = moved
    return SeasonsReset(board, closed)


class Scheduler:
    """Hands the writer each board's reset when it is due, on this instance."""

    def __init__(self, catalog: BoardCatalog, submit: Callable[[SeasonReset], Awaitable[object]],
                 clock: Callable[[], float]) -> None:
        self._catalog = catalog
        self._submit = submit
        self._clock = clock
        self._due: dict[tuple[str, int, int], int | None] = {}  # by (board, season, start)

    async def catch_up(self) -> set[tuple[str, int]]:
        """Hand the writer every board due now, one after the other; the (board, season)
        pairs handed. A failure is logged: the next turn tries again."""
        handed = set()
        now_ms = int(self._clock() * 1000)
        for board in self._catalog.all():
            at = self._when(board)
            if at is not None and at <= now_ms:
                handed.add((board.id, board.season))
                try:
                    await self._submit(SeasonReset(board.id, season=board.season))
                except ScoreboardError as error:
                    log.warning("season_reset_failed", board=board.id, reason=error.reason)
        return handed

    async def run(self) -> None:
        handed: set[tuple[str, int]] = set()
        while True:
            before = handed
            self._catalog.changed.clear()  # a change from here on cuts the sleep short
            try:
                handed = await self.catch_up()
            except Exception:  # the scheduler must outlive any one failure
                log.exception("season_schedule_failed")
            # Handed the same seasons again: they did not move on (the store is away):
            # wait before trying again. Otherwise the next due board, or a second look.
            stuck = bool(handed) and handed == before
            await self._sleep(IDLE_SECONDS if stuck else self._pause())

    async def _sleep(self, seconds: float) -> None:
        """Until ``seconds`` pass or a board changes (one made, one reset elsewhere)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._catalog.changed.wait(), seconds)

    def _pause(self) -> float:
        """Seconds until the next board is due, at most ``IDLE_SECONDS``."""
        now_ms = int(self._clock() * 1000)
        upcoming = [at for b in self._catalog.all() if (at := self._when(b)) is not None]
        if not upcoming:
            return IDLE_SECONDS
        return max(0.0, min(IDLE_SECONDS, (min(upcoming) - now_ms) / 1000))

    def _when(self, board: Board) -> int | None:
        key = (board.id, board.season, board.season_started_ms)
        if key not in self._due:
            if len(self._due) > 4 * len(self._catalog) + 64:
                self._due.clear()  # seasons moved on: forget the old ones
            self._due[key] = due_at(board)
        return self._due[key]
