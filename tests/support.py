"""Test helpers: a real scoreboard server on 127.0.0.1, in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import uvicorn

from scoreboard.app import create_app
from scoreboard.settings import Settings

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
async def running(settings: Settings) -> AsyncIterator[Server]:
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            access_log=False, lifespan="on")
    server = uvicorn.Server(config)
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
