"""A cluster: the server processes of one run, their backend, and their store read directly.

``sqlite`` is one process on an SQLite file; ``postgres-redis`` is one or more processes
on a PostgreSQL schema of their own and a Redis database of their own (8..15, flushed).
The store is read behind the servers' backs, for the checker to compare with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.faults import disk, services
from tests.support import ServerProcess, postgres_schema

BACKENDS = ("sqlite", "postgres-redis")
Redis = services.PrivateRedis | services.SystemRedis


BOARD = "default"  # the board the load writes to (an increment board, reset never)


@dataclass(frozen=True)
class LedgerRow:
    id: int
    season: int
    amount: int


@dataclass(frozen=True)
class SeasonRow:
    season: int
    started_ms: int
    ended_ms: int | None
    stored_ms: int | None


@dataclass
class StoreSnapshot:
    """What the database holds of board ``default``, read directly."""

    entries: dict[tuple[str, int], int]  # (user, season) -> the user's entry in that season
    ledger: dict[str, list[LedgerRow]]  # per user, in id order
    responses: dict[tuple[str, str], bytes]  # (user, idempotency key) -> remembered body
    season: int = 1  # the board's current season
    seasons: list[SeasonRow] = field(default_factory=list)
    resets: dict[str, list[str]] = field(default_factory=dict)  # admin sub -> audit details
    problems: list[str] = field(default_factory=list)  # integrity check failures

    @property
    def totals(self) -> dict[str, int]:
        """The current season's entries: what the live board must show."""
        return self.in_season(self.season)

    def in_season(self, season: int) -> dict[str, int]:
        return {u: score for (u, s), score in self.entries.items() if s == season}

    def sums(self) -> dict[str, int]:
        """Each user's entries added up over every season."""
        sums: dict[str, int] = defaultdict(int)
        for (user, _), score in self.entries.items():
            sums[user] += score
        return dict(sums)


class Cluster:
    def __init__(self, root: Path, backend: str, servers: list[ServerProcess],
                 database_url: str | None = None, redis: Redis | None = None) -> None:
        self.root = root
        self.backend = backend
        self.servers = servers
        self.database_url = database_url
        self.redis = redis
        self.paused: set[int] = set()

    # -- processes --------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def sqlite_path(self) -> Path:
        return self.servers[0].data_dir / "scoreboard.db"

    def pid(self, i: int) -> int | None:
        proc = self.servers[i].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def alive(self, i: int) -> bool:
        return self.pid(i) is not None

    async def start(self, i: int) -> None:
        await asyncio.to_thread(self.servers[i].start, 30)

    async def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        if i in self.paused and sig == signal.SIGKILL:
            self.paused.discard(i)
        await asyncio.to_thread(self.servers[i].kill, sig)

    def pause(self, i: int) -> None:
        proc = self.servers[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGSTOP)
            self.paused.add(i)

    def resume(self, i: int) -> None:
        proc = self.servers[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        self.paused.discard(i)

    async def heal(self) -> None:
        """Every service and every instance up again, whatever a fault left behind."""
        if self.backend == "postgres-redis":
            await asyncio.to_thread(services.ensure_postgres)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.start)
        for i in list(self.paused):
            self.resume(i)
        for i in range(len(self.servers)):
            if not self.alive(i):
                await self.start(i)

    async def ready(self, timeout: float = 30) -> None:
        """Wait until every instance says ``/readyz`` 200."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            for url in self.urls:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(url + "/readyz")).status_code == 200:
                            break
                    if asyncio.get_running_loop().time() > deadline:
                        raise RuntimeError(f"{url} is not ready after {timeout} s")
                    await asyncio.sleep(0.1)

    async def shares_ranking(self) -> bool:
        """Whether the instances read Redis (``/readyz`` names it): only then does one
        instance see another's writes at once."""
        if self.backend != "postgres-redis":
            return False
        async with httpx.AsyncClient(timeout=5) as client:
            return "redis" in (await client.get(self.urls[0] + "/readyz")).json()

    # -- the store, read directly ---------------------------------------------------

    async def snapshot(self) -> StoreSnapshot:
        if self.backend == "sqlite":
            return await asyncio.to_thread(_sqlite_snapshot, self.sqlite_path)
        assert self.database_url is not None
        return await _postgres_snapshot(self.database_url)

    async def season(self) -> int:
        """The current season of the load's board, as the store has it."""
        if self.backend == "sqlite":
            return await asyncio.to_thread(_sqlite_season, self.sqlite_path)
        assert self.database_url is not None
        return await _postgres_season(self.database_url)

    def kill_on_reset(self, i: int, before: int, seconds: float) -> bool:
        """In a thread: SIGKILL instance ``i`` the moment the store shows the board past
        season ``before`` (polled on one open connection, every 0.2 ms), within
        ``seconds``; whether it saw that."""
        pid = self.pid(i)
        if pid is None:
            return False
        deadline = time.monotonic() + seconds
        if self.backend == "sqlite":
            lite = sqlite3.connect(self.sqlite_path, timeout=10)

            def read() -> int:
                return int(lite.execute(_SEASON).fetchone()[0])

            close = lite.close
        else:
            import psycopg

            assert self.database_url is not None
            pg = psycopg.connect(self.database_url, autocommit=True)

            def read() -> int:
                row = pg.execute(_SEASON).fetchone()
                assert row is not None
                return int(row[0])

            close = pg.close
        try:
            while time.monotonic() < deadline:
                if read() != before:
                    os.kill(pid, signal.SIGKILL)
                    return True
                time.sleep(0.0002)
        finally:
            close()
        return False

    async def served_seasons(self) -> list[int | None]:
        """The season each instance says the board is at (None: no answer)."""
        served: list[int | None] = []
        async with httpx.AsyncClient(timeout=5) as client:
            for url in self.urls:
                try:
                    r = await client.get(f"{url}/boards/{BOARD}")
                    served.append(r.json()["season"] if r.status_code == 200 else None)
                except (httpx.HTTPError, ValueError, KeyError):
                    served.append(None)
        return served


def _snapshot(rows: list[list[Any]], problems: list[str]) -> StoreSnapshot:
    entries, ledger, responses, board, seasons, resets = rows
    snap = StoreSnapshot({(u, s): score for u, s, score in entries}, {},
                         {(u, k): bytes(b) for u, k, b in responses},
                         board[0][0] if board else 0,
                         [SeasonRow(*row) for row in seasons], {}, problems)
    sums: dict[tuple[str, int], int] = defaultdict(int)
    for row_id, user, season, amount in ledger:
        snap.ledger.setdefault(user, []).append(LedgerRow(row_id, season, int(amount)))
        sums[(user, season)] += int(amount)
    for admin, detail in resets:
        snap.resets.setdefault(admin, []).append(detail)
    for (user, season), score in snap.entries.items():
        if type(score) is not int:
            snap.problems.append(f"{user}: season {season} entry {score!r} is not an integer")
        elif score != sums.get((user, season), 0):
            snap.problems.append(f"{user}: season {season} entry {score} != sum of its ledger "
                                 f"rows {sums.get((user, season), 0)}")
    for user, season in set(sums) - set(snap.entries):
        snap.problems.append(f"{user}: ledger rows in season {season} but no entry")
    return snap


# The load writes the default board (an increment board): every ledger row is a change.
_QUERIES = (
    "SELECT user_id, season, score FROM entries WHERE board = 'default'",
    "SELECT id, user_id, season, amount FROM ledger WHERE board = 'default' ORDER BY id",
    "SELECT user_id, key, body FROM idempotency WHERE status = 200",
    "SELECT season FROM boards WHERE id = 'default'",
    "SELECT season, started_ms, ended_ms, stored_ms FROM seasons WHERE board = 'default' "
    "ORDER BY season",
    "SELECT admin, detail FROM audit WHERE action = 'reset_board' AND target = 'default' "
    "ORDER BY id",
)
_SEASON = _QUERIES[3]


def _sqlite_snapshot(path: Path) -> StoreSnapshot:
    conn = sqlite3.connect(path, timeout=10)
    try:
        (check,) = conn.execute("PRAGMA integrity_check").fetchone()
        problems = [] if check == "ok" else [f"PRAGMA integrity_check: {check}"]
        conn.execute("BEGIN")  # one snapshot of every table
        return _snapshot([conn.execute(q).fetchall() for q in _QUERIES], problems)
    finally:
        conn.close()


async def _postgres_snapshot(url: str) -> StoreSnapshot:
    import psycopg

    # One snapshot of all the tables, so that they agree with each other.
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn, \
            conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rows = [list(await (await conn.execute(q)).fetchall()) for q in _QUERIES]
    return _snapshot(rows, [])


def _sqlite_season(path: Path) -> int:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return int(conn.execute(_SEASON).fetchone()[0])
    finally:
        conn.close()


async def _postgres_season(url: str) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute(_SEASON)).fetchone()
    assert row is not None
    return int(row[0])


@contextlib.asynccontextmanager
async def _schema() -> AsyncIterator[str]:
    """A PostgreSQL schema of the run's own, dropped once PostgreSQL is surely up again."""
    async with postgres_schema() as url:
        try:
            yield url
        finally:
            await asyncio.to_thread(services.ensure_postgres)


@contextlib.asynccontextmanager
async def cluster(root: Path, backend: str, instances: int = 1,
                  disk_mb: int | None = None, env: dict[str, str] | None = None,
                  system_redis: bool = False) -> AsyncIterator[Cluster]:
    """A started cluster; stopped (and its PostgreSQL schema dropped) afterwards."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    base_env = {"SCOREBOARD_LOG_LEVEL": "warning", **(env or {})}
    async with contextlib.AsyncExitStack() as stack:
        if backend == "sqlite":
            if instances != 1:
                raise ValueError("one process serves one SQLite file")
            data = root / "data"
            if disk_mb is not None:
                stack.enter_context(disk.small_filesystem(data, disk_mb))
            servers = [ServerProcess(data, base_env)]
            made = Cluster(root, backend, servers)
        else:
            await asyncio.to_thread(services.ensure_postgres)
            url = await stack.enter_async_context(_schema())
            redis: Redis = (services.SystemRedis() if system_redis
                            else services.PrivateRedis(root / "redis"))
            await asyncio.to_thread(redis.start)
            if isinstance(redis, services.PrivateRedis):
                stack.callback(redis.stop)
            await asyncio.to_thread(redis.flushdb)
            env_pg = {**base_env, "SCOREBOARD_DATABASE_URL": url,
                      "SCOREBOARD_REDIS_URL": redis.url}
            servers = [ServerProcess(root / f"data{i}", env_pg) for i in range(instances)]
            made = Cluster(root, backend, servers, url, redis)
        for n, server in enumerate(made.servers):
            # Logs beside, not in, the data directory: a full disk must not take them.
            (root / "logs").mkdir(parents=True, exist_ok=True)
            server.log_path = root / "logs" / f"server{n}-{server.port}.log"
        try:
            for i in range(instances):
                await made.start(i)
            yield made
        finally:
            for i in list(made.paused):
                made.resume(i)
            for i in range(instances):
                with contextlib.suppress(Exception):
                    await made.kill(i, signal.SIGTERM)
                    await made.kill(i, signal.SIGKILL)
