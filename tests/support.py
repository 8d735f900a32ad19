"""Test helpers: a real scoreboard server on 127.0.0.1, in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from scoreboard.app import create_app
from scoreboard.server import make_config
from scoreboard.settings import Settings
from scoreboard.transport.server import Server as ScoreboardServer

SECRET = "test-secret-that-is-long-enough-for-hs256!"


@dataclass
class Server:
    url: str
    settings: Settings
    app: Any
    client: httpx.AsyncClient

    def token(self, sub: str = "alice", ttl: int = 3600, key: Any = SECRET,
              algorithm: str = "HS256", headers: dict[str, Any] | None = None,
              **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
        return jwt.encode(payload, key, algorithm=algorithm, headers=headers)

    def auth(self, sub: str = "alice", **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, **claims)}"}

    async def post(self, user_id: str = "alice", increment: Any = 1, *,
                   sub: str | None = None, key: str | None = None,
                   headers: Mapping[str, str] | None = None, **claims: Any) -> httpx.Response:
        sent = {**self.auth(sub or user_id, **claims), **(headers or {})}
        if key is not None:
            sent["Idempotency-Key"] = key
        return await self.client.post(
            "/score", json={"user_id": user_id, "increment": increment}, headers=sent
        )


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": f"sqlite:///{data_dir / 'scoreboard.db'}",
        "jwt_secret": SECRET,
        "rate_limit": "1000/minute",
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running(settings: Settings, **config: Any) -> AsyncIterator[Server]:
    """The server in this event loop, configured from ``settings`` (and uvicorn ``config``)."""
    app = create_app(settings)
    server = ScoreboardServer(make_config(app, "127.0.0.1", 0, settings=settings, **config))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server stopped before it started")
            await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield Server(url, settings, app, client)
    finally:
        server.should_exit = True
        await task


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem with ``status``; return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert set(body) >= {"type", "title", "status", "detail"}
    for leak in ("Traceback", "SELECT", "INSERT", SECRET, "sqlite"):
        assert leak not in response.text
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- child processes ----------------------------------------------------------------
#
# Every process a test starts goes through ``spawn`` and is ended by ``stop``: waited
# for, on every path. conftest.py ends any still running after the test that started
# it (and fails that test), so none leaks into the next test or outlives the run.

_children: dict[subprocess.Popen[bytes], int] = {}  # each process: its owner's serial
_serials = itertools.count(1)


def new_serial() -> int:
    """A number that grows with every owner of processes made (a test, a ServerProcess)."""
    return next(_serials)


def spawn(args: list[str], owner: int | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """Start a process on behalf of ``owner`` (a ``new_serial()``; default: a new one)."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(args, **popen)
    _children[proc] = new_serial() if owner is None else owner
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    """Send ``sig`` and wait for the exit; past ``timeout``, SIGKILL and wait. The exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _children.pop(proc, None)
    return proc.returncode


def end_children(made_after: int = 0) -> list[str]:
    """Stop every child whose owner was made after serial ``made_after``; the command
    lines of those that were still running."""
    running = []
    for proc, owner in list(_children.items()):
        if owner > made_after:
            if proc.poll() is None:
                running.append(" ".join(map(str, proc.args))[:200])  # type: ignore[arg-type]
            stop(proc, signal.SIGKILL)
    return running


class ServerProcess:
    """``scoreboard serve`` as its own process, as an operator runs it.

    ``with ServerProcess(...) as server:`` starts it and stops it (SIGTERM, then SIGKILL)
    on every way out. ``command`` is how to run ``scoreboard`` (default: this Python's
    ``-m scoreboard``; the wheel test gives an installed console script).
    """

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None,
                 command: list[str] | None = None, cwd: Path | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SCOREBOARD_DATA_DIR": str(data_dir),
            "SCOREBOARD_JWT_SECRET": SECRET,
            "SCOREBOARD_RATE_LIMIT": "100000/minute",
            **(env or {}),
        }
        self.command = command or [sys.executable, "-m", "scoreboard"]
        self.cwd = cwd
        self.owner = new_serial()  # its processes are its own, whichever test starts one
        self.log_path = data_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_args: list[str] = []
        self.scheme = "http"

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill(signal.SIGTERM)

    def start(self, timeout: float = 15) -> None:
        """Start and wait until it answers; on any failure the process is ended first."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = spawn(
                [*self.command, "serve", "--port", str(self.port), *self.start_args],
                owner=self.owner, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
            )
        try:
            self._wait_until_up(timeout)
        except BaseException:
            self.kill(signal.SIGKILL)
            raise

    def _wait_until_up(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        health = self.url.replace("http://", f"{self.scheme}://") + "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(health, timeout=1, verify=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start in {timeout} s: "
                           f"{self.log_path.read_text()[-2000:]}")

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 15) -> int | None:
        """End it with ``sig`` (SIGKILL past ``timeout``) and wait; its exit code."""
        if self.proc is None:
            return None
        return stop(self.proc, sig, timeout)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


REDIS = os.environ.get("SCOREBOARD_TEST_REDIS", "redis://127.0.0.1:6379/0")


@contextlib.asynccontextmanager
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of its own in the test Redis, its keys deleted afterwards."""
    from redis.asyncio import Redis

    prefix = "{sbtest-" + os.urandom(6).hex() + "}:"
    client = Redis.from_url(REDIS)
    try:
        await client.ping()  # fails, never skips, without a Redis
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


class RedisProcess:
    """A redis-server of the test's own, on a free port, to kill and bring back empty."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.owner = new_serial()

    def start(self, timeout: float = 10) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.data_dir)],
            owner=self.owner, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("redis-server did not start in time")

    def kill(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGKILL)


POSTGRES = os.environ.get("SCOREBOARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A schema of its own in the test PostgreSQL, dropped afterwards: its URL."""
    import psycopg

    name = f"sb_{os.urandom(6).hex()}"
    # No connection is held meanwhile: a test may restart PostgreSQL under it.
    async with await psycopg.AsyncConnection.connect(POSTGRES, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{name}"
    finally:
        async with await psycopg.AsyncConnection.connect(POSTGRES, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
