"""Your own rank across instances (PostgreSQL + Redis): a write on instance a reaches a
user signed in on instance b as a ``me`` message, passed and passing alike."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import websockets

from tests.scaleout.cluster import cluster_of_two, post
from tests.support import SECRET


async def next_me(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == "me":
                return message

    return await asyncio.wait_for(find(), timeout)


async def test_a_write_on_one_instance_reaches_a_user_on_the_other(tmp_path: Path) -> None:
    with cluster_of_two(tmp_path, {}) as cluster:
        async with httpx.AsyncClient(timeout=10) as client:
            for user, points in (("alice", 30), ("bob", 20), ("carol", 10)):
                assert (await post(client, cluster.a, user, points)).status_code == 200
            url = cluster.b.url.replace("http://", "ws://") + "/scores/ws"
            async with websockets.connect(url) as ws:
                now = int(time.time())
                token = jwt.encode({"sub": "bob", "iat": now, "exp": now + 600}, SECRET,
                                   algorithm="HS256")
                await ws.send(json.dumps({"type": "auth", "token": token}))
                first = await next_me(ws)
                assert (first["rank"], first["score"]) == (2, 20)
                await post(client, cluster.a, "carol", 15)  # on a: carol passes bob
                passed = await next_me(ws)
                assert (passed["rank"], passed["above"]["user_id"]) == (3, "carol")
                await post(client, cluster.a, "bob", 20)  # on a: bob passes both
                passing = await next_me(ws)
                assert (passing["rank"], passing["score"], passing["above"]) == (1, 40, None)
                assert passing["below"]["user_id"] == "alice"
