"""Two ``scoreboard serve`` processes on one PostgreSQL schema and a Redis of their own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg

from tests.support import POSTGRES, SECRET, RedisProcess, ServerProcess


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    redis: RedisProcess
    schema: str

    def totals(self, board: str = "default") -> dict[str, int]:
        """The truth: a board's entries in PostgreSQL."""
        return dict(self._rows(
            f"SELECT user_id, score FROM entries WHERE board = '{board}'"))

    def board(self, board: str = "default") -> list[tuple[str, int]]:
        """A board's top 100 as the database orders it (a desc board)."""
        return self._rows(
            "SELECT user_id, score FROM entries WHERE user_id NOT IN (SELECT user_id FROM bans) "
            f"AND board = '{board}' ORDER BY score DESC, seq LIMIT 100")

    def _rows(self, query: str) -> list[Any]:
        with psycopg.connect(POSTGRES, options=f"-csearch_path={self.schema}") as conn:
            return conn.execute(query).fetchall()  # type: ignore[arg-type]


@contextlib.contextmanager
def cluster_of_two(tmp: Path, env: dict[str, str]) -> Iterator[Cluster]:
    """Instances a and b with ``env``, on a schema and a redis-server of their own."""
    schema = f"sb_{os.urandom(6).hex()}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    redis = RedisProcess(tmp / "redis")
    try:
        redis.start()
        env = {"SCOREBOARD_DATABASE_URL": f"{POSTGRES}?options=-csearch_path%3D{schema}",
               "SCOREBOARD_REDIS_URL": redis.url, **env}
        with ServerProcess(tmp / "a", env) as a, ServerProcess(tmp / "b", env) as b:
            yield Cluster(a, b, redis, schema)
    finally:
        redis.kill()
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def auth(sub: str, **claims: Any) -> dict[str, str]:
    now = int(time.time())
    token = jwt.encode({"sub": sub, "iat": now, "exp": now + 600, **claims}, SECRET,
                       algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def post(client: httpx.AsyncClient, server: ServerProcess, user: str, increment: int,
               key: str | None = None) -> httpx.Response:
    headers = auth(user) | ({"Idempotency-Key": key} if key else {})
    return await client.post(f"{server.url}/score", headers=headers,
                              json={"user_id": user, "increment": increment})


async def eventually(check: Any, timeout: float, every: float = 0.02) -> float:
    """Seconds until ``check()`` (async) is true; fails after ``timeout``."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, "did not converge in time"
        await asyncio.sleep(every)
    return time.monotonic() - started
