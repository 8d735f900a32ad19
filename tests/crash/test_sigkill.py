"""Hundreds of concurrent keyed writes, SIGKILL mid-run, restart on the same data.

Every acknowledged increment must be there, and retrying every key (answered or not)
must never count one twice: each user's final total is exactly the sum of its ops.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support import SECRET, ServerProcess

USERS = [f"user{i}" for i in range(25)]
OPS = 600


def token(user: str) -> str:
    import time
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")


def op(i: int) -> tuple[str, int, str]:
    return USERS[i % len(USERS)], 1 + i % 7, f"op-{i}"


async def send(client: httpx.AsyncClient, tokens: dict[str, str], i: int) -> httpx.Response:
    user, inc, key = op(i)
    return await client.post("/score", json={"user_id": user, "increment": inc}, headers={
        "Authorization": f"Bearer {tokens[user]}", "Idempotency-Key": key})


@pytest.mark.slow
async def test_sigkill_loses_no_acknowledged_write_and_counts_none_twice(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    tokens = {u: token(u) for u in USERS}
    acked: dict[int, bytes] = {}
    killed = asyncio.Event()

    async def worker(client: httpx.AsyncClient, indexes: list[int]) -> None:
        for i in indexes:
            try:
                r = await send(client, tokens, i)
            except httpx.HTTPError:
                continue  # unknown outcome: retried after the restart
            if r.status_code == 200:
                acked[i] = r.content
            if len(acked) >= OPS // 3 and not killed.is_set():
                killed.set()
                server.kill(signal.SIGKILL)  # while the other workers are mid-request

    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=server.url, timeout=5, limits=limits) as client:
        await asyncio.gather(*(worker(client, list(range(w, OPS, 100))) for w in range(100)))
    assert killed.is_set()
    assert OPS // 3 <= len(acked) < OPS  # the kill landed mid-run

    server.start()  # same data directory
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for i in range(OPS):
                r = await send(client, tokens, i)
                assert r.status_code == 200, (i, r.status_code, r.text)
                if i in acked:  # answered before the kill: a byte-identical replay
                    assert r.headers.get("idempotent-replayed") == "true"
                    assert r.content == acked[i]
            for i in range(0, OPS, 37):  # and again: nothing counts twice
                assert (await send(client, tokens, i)).headers["idempotent-replayed"] == "true"
            expected: dict[str, int] = {}
            for i in range(OPS):
                user, inc, _ = op(i)
                expected[user] = expected.get(user, 0) + inc
            board = (await client.get("/scores", params={"limit": 100})).json()
            assert {e["user_id"]: e["score"] for e in board} == expected
    finally:
        server.kill(signal.SIGTERM)


async def test_sigterm_finishes_in_flight_writes_and_exits_0(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    assert server.proc is not None
    tokens = {u: token(u) for u in USERS}
    answers: dict[int, httpx.Response | Exception] = {}
    stopping = asyncio.Event()

    async def worker(client: httpx.AsyncClient, indexes: list[int]) -> None:
        for i in indexes:
            try:
                answers[i] = await send(client, tokens, i)
            except httpx.HTTPError as exc:
                answers[i] = exc
            if sum(isinstance(a, httpx.Response) for a in answers.values()) >= 100:
                stopping.set()
            if stopping.is_set() and isinstance(answers[i], Exception):
                return

    async def stop_when_busy() -> None:
        await stopping.wait()
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=server.url, timeout=10, limits=limits) as client:
        await asyncio.gather(stop_when_busy(),
                             *(worker(client, list(range(w, OPS, 50))) for w in range(50)))
    assert server.proc.wait(timeout=15) == 0
    statuses = {a.status_code for a in answers.values() if isinstance(a, httpx.Response)}
    assert statuses == {200}  # nothing in flight was failed by the stop
    acked = {i for i, a in answers.items() if isinstance(a, httpx.Response)}
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for i in acked:
                assert (await send(client, tokens, i)).headers.get("idempotent-replayed") == "true"
    finally:
        server.kill(signal.SIGTERM)
