"""API.md "Your own rank" over a real server: a signed-in WebSocket client gets its rank,
score and neighbours on each board at once, then whenever they change — passed,
passing, a neighbour's score — and not when nothing it sees changed; nulls without an
entry; a bad token closes with 4401; an expired one stops the personal pushes only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.api.test_boards import make, write
from tests.support import Server


def ws_url(server: Server, boards: str = "default") -> str:
    return server.url.replace("http://", "ws://") + f"/scores/ws?boards={boards}"


class Socket:
    """A signed-in WebSocket: its ``me`` messages and the rest kept apart."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.others: list[dict[str, Any]] = []

    async def next(self, kind: str = "me", timeout: float = 3.0) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                message: dict[str, Any] = json.loads(await self.ws.recv())
                if message["type"] == kind:
                    return message
                self.others.append(message)

        return await asyncio.wait_for(find(), timeout)


@asynccontextmanager
async def signed_in(server: Server, user: str, boards: str = "default",
                    **claims: Any) -> AsyncIterator[Socket]:
    async with websockets.connect(ws_url(server, boards)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": server.token(user, **claims)}))
        yield Socket(ws)


def entry(rank: int, user: str, score: int) -> dict[str, Any]:
    return {"rank": rank, "user_id": user, "name": user, "score": score}


async def test_the_first_message_then_passed_and_passing(server: Server) -> None:
    for user, points in (("alice", 50), ("bob", 40), ("carol", 30)):
        await server.post(user, points)
    async with signed_in(server, "bob") as bob:
        assert await bob.next() == {
            "type": "me", "board": "default", "user_id": "bob", "rank": 2, "score": 40,
            "above": entry(1, "alice", 50), "below": entry(3, "carol", 30)}
        await server.post("carol", 15)  # carol passes bob
        passed = await bob.next()
        assert (passed["rank"], passed["above"], passed["below"]) == (
            3, entry(2, "carol", 45), None)
        await server.post("bob", 20)  # bob passes both
        passing = await bob.next()
        assert (passing["rank"], passing["score"], passing["above"], passing["below"]) == (
            1, 60, None, entry(2, "alice", 50))


async def test_a_neighbours_change_is_pushed_and_a_far_one_is_not(server: Server) -> None:
    for i in range(20):
        await server.post(f"p{i:02d}", 100 - i)  # p00 100 ... p19 81
    async with signed_in(server, "p05") as me:
        first = await me.next()
        assert (first["rank"], first["below"]) == (6, entry(7, "p06", 94))
        await server.post("p15", 1)  # far below, crossing nobody near p05: nothing
        await server.post("p00", 1)  # the top moves, still far above
        r = await server.post("p06", 1)  # the neighbour below: 95, still below p05
        assert r.status_code == 200
        changed = await me.next()  # the very next message is this one, nothing before
        assert (changed["rank"], changed["below"]) == (6, entry(7, "p06", 95))


async def test_a_user_without_an_entry_gets_nulls_then_its_entry(server: Server) -> None:
    await server.post("alice", 5)
    async with signed_in(server, "dora") as dora:
        assert await dora.next() == {"type": "me", "board": "default", "user_id": "dora",
                                     "rank": None, "score": None, "above": None,
                                     "below": None}
        await server.post("dora", 3)
        mine = await dora.next()
        assert (mine["rank"], mine["score"], mine["above"]) == (2, 3, entry(1, "alice", 5))


async def test_each_subscribed_board_and_a_new_one(server: Server) -> None:
    await make(server, "weekly")
    await write(server, "weekly", "alice", "increment", 7)
    await server.post("alice", 2)
    async with signed_in(server, "alice", boards="default,weekly") as alice:
        got = {m["board"]: m for m in [await alice.next(), await alice.next()]}
        assert (got["default"]["score"], got["weekly"]["score"]) == (2, 7)
        await make(server, "daily")
        await alice.ws.send(json.dumps({"type": "subscribe", "boards": ["daily"]}))
        daily = await alice.next()
        assert (daily["board"], daily["rank"]) == ("daily", None)
        await server.post("alice", 1)  # default: no longer followed
        await write(server, "daily", "alice", "increment", 4)
        assert (await alice.next())["board"] == "daily"


async def test_a_bad_token_is_an_error_and_4401(server: Server) -> None:
    async with websockets.connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "not.a.token"}))
        messages = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 3)))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert [m["type"] for m in messages][-1] == "error"


async def test_an_expired_token_stops_the_personal_pushes_only(server: Server) -> None:
    await server.post("alice", 5)
    async with signed_in(server, "bob", ttl=2) as bob:
        assert (await bob.next())["rank"] is None
        said = await bob.next("error", timeout=5)
        assert "expired" in said["detail"]
        await server.post("bob", 9)  # bob passes alice: a board push, no personal one
        scores = await bob.next("scores")
        while scores["scores"][0]["user_id"] != "bob":
            scores = await bob.next("scores")
        await server.post("bob", 1)
        await bob.next("scores")
        assert not [m for m in bob.others if m["type"] == "me"]
        # Signing in again resumes them.
        await bob.ws.send(json.dumps({"type": "auth", "token": server.token("bob")}))
        assert (await bob.next())["score"] == 10
