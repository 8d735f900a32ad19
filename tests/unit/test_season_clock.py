"""Season resets against an injected clock, on the real SQLite store: a reset missed
while the service was down runs at start (each season it closes ends at its scheduled
time, not when the service came back), and a due reset runs on time, with the writes
before it in the old season and those after it in the new."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from limits import parse

from scoreboard.auth import Identity
from scoreboard.broker.memory import MemoryBroker
from scoreboard.model import BoardSpec, rfc3339
from scoreboard.ranking.memory import MemoryRanking
from scoreboard.ratelimit import RateLimits
from scoreboard.seasons import due_at
from scoreboard.service import Service
from scoreboard.store.sqlite import SQLiteStore

DAILY = BoardSpec("daily", "Daily", reset="day", timezone="Europe/Berlin")
ROOT = Identity("root", None, admin=True)


def ms(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)


@asynccontextmanager
async def service_at(path: Path, clock: Callable[[], float]) -> AsyncIterator[Service]:
    store = SQLiteStore(path)
    await store.open()
    limits = RateLimits(parse("1000/second"), parse("1000/second"), clock=clock)
    service = Service(store, MemoryRanking(), limits, MemoryBroker(), clock=clock)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        await store.close()


async def add(service: Service, user: str, points: int) -> None:
    await service.writes.add(ROOT, "daily", user, points, None, None, "f")


async def settle(service: Service, board: str, season: int) -> None:
    """Until the closed season's standings are stored."""
    for _ in range(200):
        found = await service.store.season(board, season)
        if found is not None and found.stored_ms is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"season {season} of {board} was never stored")


async def test_resets_missed_while_down_run_at_start_ending_on_schedule(tmp_path: Path) -> None:
    db = tmp_path / "scoreboard.db"
    now = ms("2026-03-28T12:00:00+01:00")  # the Saturday before Berlin springs forward
    async with service_at(db, lambda: now / 1000) as service:
        await service.writes.change_board("root", "create", DAILY)
        await add(service, "alice", 5)
        await add(service, "bob", 7)
    now = ms("2026-03-31T10:00:00+02:00")  # three midnights later
    async with service_at(db, lambda: now / 1000) as service:
        board = service.boards.get("daily")
        assert board is not None and board.season == 4
        seasons = await service.store.seasons("daily")
        assert [(s.season, rfc3339(s.started_ms), s.ended_ms and rfc3339(s.ended_ms))
                for s in seasons] == [
            (4, "2026-03-30T22:00:00.000Z", None),
            (3, "2026-03-29T22:00:00.000Z", "2026-03-30T22:00:00.000Z"),
            (2, "2026-03-28T23:00:00.000Z", "2026-03-29T22:00:00.000Z"),  # 23 hours
            (1, "2026-03-28T11:00:00.000Z", "2026-03-28T23:00:00.000Z"),
        ]
        for season in (1, 2, 3):
            await settle(service, "daily", season)
        final = await service.store.standings("daily", 1, 10)
        assert [(r.rank, r.user_id, r.score) for r in final] == [(1, "bob", 7), (2, "alice", 5)]
        assert await service.store.standings("daily", 2, 10) == []
        assert await service.reads.count("daily") == 0


async def test_a_due_reset_runs_on_time_between_the_writes(tmp_path: Path) -> None:
    # The clock runs (it is the real one, shifted): the next Berlin midnight is 0.6 s away.
    midnight = ms("2026-10-25T00:00:00+02:00")  # the night Berlin falls back
    offset = (midnight - 600) / 1000 - time.time()

    def clock() -> float:
        return time.time() + offset

    async with service_at(tmp_path / "scoreboard.db", clock) as service:
        await service.writes.change_board("root", "create", DAILY)
        await add(service, "alice", 3)
        board = service.boards.get("daily")
        assert board is not None and board.season == 1
        while clock() * 1000 < midnight + 300:
            await asyncio.sleep(0.05)
        await add(service, "alice", 4)
        board = service.boards.get("daily")
        assert board is not None and board.season == 2
        assert board.season_started_ms == midnight  # ended on schedule
        (closed,) = [s for s in await service.store.seasons("daily") if s.season == 1]
        assert closed.ended_ms == midnight
        await settle(service, "daily", 1)
        assert [(r.user_id, r.score) for r in await service.store.standings("daily", 1, 10)] \
            == [("alice", 3)]
        now = await service.reads.entry("daily", "alice")
        assert now.score == 4  # the write after the reset is the new season's alone
        # The next reset of a 25-hour day.
        assert due_at(board) == midnight + 25 * 3_600_000
