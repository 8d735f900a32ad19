"""A cluster: the server processes of one run, their backend, and their store read directly.

``sqlite`` is one process on an SQLite file; ``postgres-redis`` is one or more processes
on a PostgreSQL schema of their own and a Redis database of their own (8..15, flushed).
The store is read behind the servers' backs, for the checker to compare with.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.faults import disk, services
from tests.support import ServerProcess, postgres_schema

BACKENDS = ("sqlite", "postgres-redis")
Redis = services.PrivateRedis | services.SystemRedis


@dataclass
class StoreSnapshot:
    """What the database holds, read directly."""

    totals: dict[str, int]
    ledger: dict[str, list[int]]  # deltas per user, in commit order
    responses: dict[tuple[str, str], bytes]  # (user, idempotency key) -> remembered body
    problems: list[str] = field(default_factory=list)  # integrity check failures


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


def _snapshot(totals: list[tuple[str, int]], ledger: list[tuple[str, int]],
              responses: list[tuple[str, str, bytes]], problems: list[str]) -> StoreSnapshot:
    deltas: dict[str, list[int]] = defaultdict(list)
    for user, delta in ledger:
        deltas[user].append(int(delta))
    snap = StoreSnapshot({u: t for u, t in totals}, dict(deltas),
                         {(u, k): bytes(b) for u, k, b in responses}, problems)
    for user, total in snap.totals.items():
        if type(total) is not int:
            snap.problems.append(f"{user}: total {total!r} is not an integer")
        elif total != sum(snap.ledger.get(user, [])):
            snap.problems.append(f"{user}: total {total} != sum of its ledger "
                                 f"{sum(snap.ledger.get(user, []))}")
    for user in set(snap.ledger) - set(snap.totals):
        snap.problems.append(f"{user}: ledger entries but no total")
    return snap


# The load writes the default board (an increment board): every ledger row is a change.
_TOTALS = "SELECT user_id, score FROM entries WHERE board = 'default'"
_LEDGER = "SELECT user_id, amount FROM ledger WHERE board = 'default' ORDER BY id"
_RESPONSES = "SELECT user_id, key, body FROM idempotency WHERE status = 200"


def _sqlite_snapshot(path: Path) -> StoreSnapshot:
    conn = sqlite3.connect(path, timeout=10)
    try:
        (check,) = conn.execute("PRAGMA integrity_check").fetchone()
        problems = [] if check == "ok" else [f"PRAGMA integrity_check: {check}"]
        return _snapshot(conn.execute(_TOTALS).fetchall(), conn.execute(_LEDGER).fetchall(),
                         conn.execute(_RESPONSES).fetchall(), problems)
    finally:
        conn.close()


async def _postgres_snapshot(url: str) -> StoreSnapshot:
    import psycopg

    # One snapshot of all three tables, so that they agree with each other.
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn, \
            conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        totals = await (await conn.execute(_TOTALS)).fetchall()
        ledger = await (await conn.execute(_LEDGER)).fetchall()
        responses = await (await conn.execute(_RESPONSES)).fetchall()
    return _snapshot(totals, ledger, responses, [])


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
