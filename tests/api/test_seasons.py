"""API.md "Seasons" through HTTP: a reset closes a season (audited when an administrator
asks), its final standings are stored once and never change, a write belongs to the
season current when it commits, and live clients are told a season began."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from tests.api.test_boards import admin, make, next_link, write
from tests.live.sse import stream
from tests.support import Server, problem

IMMUTABLE = "public, max-age=31536000, immutable"


async def reset(s: Server, board: str) -> httpx.Response:
    return await s.client.post(f"/admin/boards/{board}/reset", headers=admin(s))


async def scores(s: Server, path: str, **params: Any) -> list[dict[str, Any]]:
    r = await s.client.get(path, params=params)
    assert r.status_code == 200, r.text
    return list(r.json())


async def test_a_reset_closes_the_season_and_opens_an_empty_one(server: Server) -> None:
    await make(server, "weekly", reset="week", timezone="Europe/Berlin")
    for user, points in (("alice", 5), ("bob", 9), ("carol", 5)):
        assert (await write(server, "weekly", user, "increment", points)).status_code == 200
    before = (await server.client.get("/boards/weekly")).json()
    r = await reset(server, "weekly")
    assert r.status_code == 200, r.text
    board = r.json()
    assert board["season"] == 2 and board["entries"] == 0
    assert board["season_started_at"] > before["season_started_at"]
    assert board["next_reset_at"] == before["next_reset_at"]  # the schedule is unchanged
    assert await scores(server, "/boards/weekly/scores") == []
    seasons = (await server.client.get("/boards/weekly/seasons")).json()
    assert seasons == [
        {"season": 2, "started_at": board["season_started_at"], "ended_at": None},
        {"season": 1, "started_at": before["season_started_at"],
         "ended_at": board["season_started_at"]}]
    final = await scores(server, "/boards/weekly/seasons/1/scores")
    assert [(e["rank"], e["user_id"], e["score"]) for e in final] == [
        (1, "bob", 9), (2, "alice", 5), (3, "carol", 5)]  # ties: who got there first
    alice = (await server.client.get("/boards/weekly/seasons/1/users/alice")).json()
    assert alice == {"rank": 2, "user_id": "alice", "name": "alice", "score": 5}
    # The current season through the seasons path is the live board.
    assert await scores(server, "/boards/weekly/seasons/2/scores") == []
    problem(await server.client.get("/boards/weekly/seasons/2/users/alice"), 404)
    # A write now belongs to season 2 only.
    r = await write(server, "weekly", "alice", "increment", 1)
    assert r.json() == {"user_id": "alice", "board": "weekly", "score": 1, "rank": 1}
    assert (await server.client.get("/users/alice/boards")).json()[-1] == {
        "board": "weekly", "season": 2, "rank": 1, "score": 1}
    assert (await scores(server, "/boards/weekly/seasons/1/scores"))[1]["score"] == 5


async def test_seasons_that_have_not_begun_are_404(server: Server) -> None:
    await make(server, "daily", reset="day")
    await reset(server, "daily")
    for season in ("3", "0", "-1", "x", "1.0", "99999999999"):
        problem(await server.client.get(f"/boards/daily/seasons/{season}/scores"), 404)
        problem(await server.client.get(f"/boards/daily/seasons/{season}/users/a"), 404)
    problem(await server.client.get("/boards/nope/seasons"), 404)
    problem(await server.client.get("/boards/daily/seasons/1/users/nobody"), 404)
    problem(await reset(server, "nope"), 404)
    problem(await server.client.post("/admin/boards/daily/reset",
                                     headers=server.auth("alice")), 403)


async def test_final_standings_are_immutable_and_cached(server: Server) -> None:
    await make(server, "weekly", reset="week")
    await write(server, "weekly", "alice", "increment", 3)
    await reset(server, "weekly")
    r = await server.client.get("/boards/weekly/seasons/1/scores")
    assert r.headers["cache-control"] == IMMUTABLE and r.headers["etag"]
    again = await server.client.get("/boards/weekly/seasons/1/scores",
                                    headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.headers["cache-control"] == IMMUTABLE
    user = await server.client.get("/boards/weekly/seasons/1/users/alice")
    assert user.headers["cache-control"] == IMMUTABLE
    live = await server.client.get("/boards/weekly/seasons/2/scores")
    assert live.headers["cache-control"] == "no-cache"


async def test_reverts_and_bans_after_the_end_leave_the_standings_as_they_were(
        server: Server) -> None:
    await make(server, "weekly", reset="week")
    for user, points in (("alice", 5), ("bob", 9), ("mallory", 50), ("eve", 70)):
        await write(server, "weekly", user, "increment", points)
    banned = await server.client.post("/admin/users/eve/ban", headers=admin(server))
    assert banned.status_code == 200
    await reset(server, "weekly")
    body = (await server.client.get("/boards/weekly/seasons/1/scores")).content
    # Banned before the end: not in the standings. After it: still in them.
    assert [e["user_id"] for e in json.loads(body)] == ["mallory", "bob", "alice"]
    await write(server, "weekly", "mallory", "increment", 1)
    r = await server.client.post("/admin/users/mallory/revert", headers=admin(server),
                                 json={"since": "2000-01-01T00:00:00Z", "board": "weekly"})
    assert r.status_code == 200, r.text
    assert (await server.client.post("/admin/users/bob/ban", headers=admin(server))
            ).status_code == 200
    assert (await server.client.post("/admin/users/eve/unban", headers=admin(server))
            ).status_code == 200
    assert (await server.client.get("/boards/weekly/seasons/1/scores")).content == body
    live = (await server.client.get("/boards/weekly/scores")).json()
    assert [(e["user_id"], e["score"]) for e in live] == [("mallory", 0)]  # reverted


async def test_a_closed_season_pages_every_entry_once(server: Server) -> None:
    await make(server, "weekly", reset="week")
    for i in range(250):
        r = await write(server, "weekly", f"u{i:03d}", "increment", 1 + i % 7)
        assert r.status_code == 200
    await reset(server, "weekly")
    seen: list[dict[str, Any]] = []
    url: str | None = "/boards/weekly/seasons/1/scores?limit=100"
    while url is not None:
        r = await server.client.get(url)
        assert r.status_code == 200 and r.headers["cache-control"] == IMMUTABLE
        seen += r.json()
        url = next_link(r)
    assert [e["rank"] for e in seen] == list(range(1, 251))
    assert len({e["user_id"] for e in seen}) == 250
    assert [e["score"] for e in seen] == sorted((e["score"] for e in seen), reverse=True)
    # Cursors belong to their board and season.
    first = await server.client.get("/boards/weekly/seasons/1/scores?limit=10")
    cursor = first.headers["link"].split("after=")[1].split(">")[0]
    problem(await server.client.get(f"/boards/weekly/scores?after={cursor}"), 422)
    await write(server, "weekly", "x", "increment", 1)
    await write(server, "weekly", "y", "increment", 1)
    live = await server.client.get("/boards/weekly/scores?limit=1")
    live_cursor = live.headers["link"].split("after=")[1].split(">")[0]
    problem(await server.client.get(f"/boards/weekly/seasons/1/scores?after={live_cursor}"),
            422)
    problem(await server.client.get("/boards/weekly/seasons/1/scores?after=junk"), 422)


async def test_a_reset_is_audited(server: Server) -> None:
    await make(server, "weekly", reset="week")
    await reset(server, "weekly")
    audit = server.app.state.service.store
    rows = audit._reads("SELECT admin, action, target, detail FROM audit "
                        "WHERE action = 'reset_board'", ())
    assert rows == [("root", "reset_board", "weekly", "season 1 -> 2")]


async def test_live_clients_are_told_a_season_began(server: Server) -> None:
    await make(server, "weekly", reset="week")
    await write(server, "weekly", "alice", "increment", 4)
    await asyncio.sleep(0.15)
    url = server.url.replace("http", "ws") + "/scores/ws?boards=weekly,default"
    async with stream(server.client, path="/boards/weekly/stream") as sse, \
            websockets.connect(url) as ws:
        first = await sse.next()
        assert first.event == "scores" and first.data[0]["user_id"] == "alice"
        got = {json.loads(await ws.recv())["board"] for _ in range(2)}
        assert got == {"weekly", "default"}
        board = (await reset(server, "weekly")).json()
        season = await sse.next()
        assert (season.event, season.data) == ("season", {
            "board": "weekly", "season": 2, "started_at": board["season_started_at"]})
        empty = await sse.next()
        assert (empty.event, empty.data) == ("scores", []) and empty.id > first.id
        message = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert message == {"type": "season", "board": "weekly", "season": 2,
                           "started_at": board["season_started_at"]}
        message = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert (message["type"], message["board"], message["scores"]) == (
            "scores", "weekly", [])
        # A write in the new season is pushed as usual, with no second season event.
        await write(server, "weekly", "bob", "increment", 1)
        after = await sse.next()
        assert after.event == "scores" and after.data[0]["user_id"] == "bob"


async def test_a_deleted_boards_seasons_are_gone(server: Server) -> None:
    await make(server, "weekly", reset="week")
    await write(server, "weekly", "alice", "increment", 4)
    await reset(server, "weekly")
    await server.client.delete("/admin/boards/weekly", headers=admin(server))
    for path in ("/boards/weekly/seasons", "/boards/weekly/seasons/1/scores",
                 "/boards/weekly/seasons/1/users/alice"):
        problem(await server.client.get(path), 404)
