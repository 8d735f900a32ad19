"""API.md "Boards and seasons" through HTTP, rule by rule (seasons and "your own rank"
have their own tests): board administration, reads with cursors, around-me, friends'
ranks, a user's boards, writes by operator, tickets bound to boards, per-board live
feeds, reverts by board, bans on every board."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets

from scoreboard.model import ActionKind
from tests.live.sse import stream
from tests.support import Server, problem

ADMIN = {"scope": "scoreboard:admin"}
SPEEDRUN = {"title": "Speedrun", "sort": "asc", "operator": "best", "reset": "week",
            "timezone": "Europe/Berlin"}


def admin(s: Server) -> dict[str, str]:
    return s.auth("root", **ADMIN)


async def make(s: Server, board: str, **definition: Any) -> httpx.Response:
    body = {"title": board.title(), **definition}
    return await s.client.put(f"/admin/boards/{board}", json=body, headers=admin(s))


async def write(s: Server, board: str, user: str, field: str, value: Any,
                key: str | None = None, sub: str | None = None) -> httpx.Response:
    headers = s.auth(sub or user) | ({"Idempotency-Key": key} if key else {})
    return await s.client.post(f"/boards/{board}/score", json={"user_id": user, field: value},
                               headers=headers)


def next_link(r: httpx.Response) -> str | None:
    link = r.headers.get("link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"'), link
    return link[1:link.index(">")]


# -- administration -------------------------------------------------------------------


async def test_a_board_is_made_read_retitled_and_kept_as_made(server: Server) -> None:
    (default,) = (await server.client.get("/boards")).json()
    assert {k: default[k] for k in ("id", "sort", "operator", "reset", "timezone", "season",
                                    "next_reset_at", "entries")} == {
        "id": "default", "sort": "desc", "operator": "increment", "reset": "never",
        "timezone": "UTC", "season": 1, "next_reset_at": None, "entries": 0}
    made = await make(server, "speedrun", **SPEEDRUN)
    assert made.status_code == 201, made.text
    board = made.json()
    assert {k: board[k] for k in SPEEDRUN} == SPEEDRUN
    assert board["season"] == 1 and board["entries"] == 0
    assert board["next_reset_at"].endswith("Z") and board["next_reset_at"] > board[
        "season_started_at"]
    assert (await server.client.get("/boards/speedrun")).json() == board
    assert [b["id"] for b in (await server.client.get("/boards")).json()] == [
        "default", "speedrun"]
    retitled = await make(server, "speedrun", **{**SPEEDRUN, "title": "Any%"})
    assert retitled.status_code == 200 and retitled.json()["title"] == "Any%"
    for change in ({"sort": "desc"}, {"operator": "set"}, {"reset": "day"},
                   {"timezone": "UTC"}):
        problem(await make(server, "speedrun", **{**SPEEDRUN, **change}), 409)
    assert (await make(server, "default", title="All time")).status_code == 200
    problem(await make(server, "default", title="All time", sort="asc"), 409)
    problem(await server.client.get("/boards/nope"), 404)


@pytest.mark.parametrize("definition", [
    {}, {"title": ""}, {"title": 5}, {"title": "x" * 129}, {"title": "tab\there"},
    {"title": "T", "sort": "up"}, {"title": "T", "operator": "max"},
    {"title": "T", "reset": "year"}, {"title": "T", "timezone": "Mars/Olympus"},
    {"title": "T", "extra": 1}, {"title": "T", "id": "t"},
])
async def test_a_bad_definition_is_422(server: Server, definition: dict[str, Any]) -> None:
    r = await server.client.put("/admin/boards/t", json=definition, headers=admin(server))
    problem(r, 422)


async def test_only_administrators_change_boards(server: Server) -> None:
    problem(await server.client.put("/admin/boards/t", json={"title": "T"},
                                    headers=server.auth("alice")), 403)
    problem(await server.client.put("/admin/boards/t", json={"title": "T"},
                                    headers=server.auth("game", scope="scoreboard:write")), 403)
    problem(await server.client.delete("/admin/boards/t"), 401)


async def test_deleting_a_board(server: Server) -> None:
    await make(server, "weekly")
    assert (await write(server, "weekly", "alice", "increment", 3)).status_code == 200
    r = await server.client.delete("/admin/boards/weekly", headers=admin(server))
    assert r.status_code == 204 and r.content == b""
    for path in ("/boards/weekly", "/boards/weekly/scores", "/boards/weekly/users/alice",
                 "/boards/weekly/users/alice/around", "/boards/weekly/stream"):
        problem(await server.client.get(path), 404)
    problem(await write(server, "weekly", "alice", "increment", 3), 404)
    assert [b["id"] for b in (await server.client.get("/boards")).json()] == ["default"]
    assert (await server.client.get("/users/alice/boards")).json() == []
    problem(await make(server, "weekly"), 409)  # an id is never used again
    problem(await server.client.delete("/admin/boards/weekly", headers=admin(server)), 404)
    problem(await server.client.delete("/admin/boards/default", headers=admin(server)), 409)
    view = (await server.client.get("/admin/users/alice", headers=admin(server))).json()
    assert [e["board"] for e in view["ledger"]] == ["weekly"]  # the ledger stays


async def test_at_most_max_boards(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(max_boards=3) as s:
        assert (await make(s, "one")).status_code == 201
        assert (await make(s, "two")).status_code == 201
        problem(await make(s, "three"), 409)
        await s.client.delete("/admin/boards/two", headers=admin(s))
        assert (await make(s, "three")).status_code == 201


# -- writing ------------------------------------------------------------------------


async def test_each_operator_through_http(server: Server) -> None:
    await make(server, "speedrun", **SPEEDRUN)
    await make(server, "last", operator="set")
    r = await write(server, "default", "alice", "increment", 5)
    assert r.json() == {"user_id": "alice", "board": "default", "score": 5, "rank": 1}
    runs = [await write(server, "speedrun", "alice", "score", t) for t in (90, 95, 80)]
    assert [r.json()["score"] for r in runs] == [90, 90, 80]  # a worse time changes nothing
    assert (await write(server, "speedrun", "bob", "score", 85)).json()["rank"] == 2
    assert (await write(server, "last", "alice", "score", 7)).json()["score"] == 7
    assert (await write(server, "last", "alice", "score", 3)).json()["score"] == 3
    assert (await write(server, "last", "alice", "score", 0)).json()["score"] == 0
    board = (await server.client.get("/boards/speedrun/scores")).json()
    assert [(e["user_id"], e["score"]) for e in board] == [("alice", 80), ("bob", 85)]
    # The default board's own paths are the same board.
    assert (await server.client.get("/scores")).json() == (
        await server.client.get("/boards/default/scores")).json()


async def test_the_wrong_field_for_the_board_is_422(server: Server) -> None:
    await make(server, "speedrun", **SPEEDRUN)
    problem(await write(server, "speedrun", "alice", "increment", 5), 422)
    problem(await write(server, "default", "alice", "score", 5), 422)
    for bad in (-1, 1.5, "5", True, 2**53):
        problem(await write(server, "speedrun", "alice", "score", bad), 422)


async def test_an_unknown_board_is_404_after_authentication_and_the_rate_limit(
        make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(rate_limit="2/minute") as s:
        problem(await s.client.post("/boards/nope/score", json={}), 401)
        problem(await write(s, "nope", "alice", "increment", 1), 404)
        problem(await write(s, "nope", "alice", "increment", 1), 404)
        problem(await write(s, "nope", "alice", "increment", 1), 429)  # counted, then refused


async def test_keys_and_limits_span_boards(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(rate_limit="4/minute") as s:
        await make(s, "weekly")
        first = await write(s, "weekly", "alice", "increment", 2, key="k")
        again = await write(s, "weekly", "alice", "increment", 2, key="k")
        assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
        problem(await write(s, "default", "alice", "increment", 2, key="k"), 422)  # other board
        problem(await s.post("alice", 2, key="k"), 422)  # another route
        assert (await write(s, "default", "alice", "increment", 2)).status_code == 200
        problem(await s.post("alice", 1), 429)  # 4 a minute, all boards (422s count too)


async def test_tickets_belong_to_a_board(make_server) -> None:  # type: ignore[no-untyped-def]
    kinds = (ActionKind("quick", 7, 0, 60, "weekly"), ActionKind("run", 5, 0, 60, "speedrun"),
             ActionKind("plain", 3, 0, 60))
    async with make_server(actions=kinds) as s:
        await make(s, "weekly")
        await make(s, "speedrun", **SPEEDRUN)

        async def ticket(kind: str) -> str:
            r = await s.client.post("/actions", json={"kind": kind}, headers=s.auth("alice"))
            return str(r.json()["action_id"])

        via_score = await s.client.post("/score", json={"user_id": "alice",
                                                        "action_id": await ticket("quick")},
                                        headers=s.auth("alice"))
        assert via_score.json() == {"user_id": "alice", "score": 7, "rank": 1}  # weekly's
        via_board = await write(s, "weekly", "alice", "action_id", await ticket("quick"))
        assert via_board.json() == {"user_id": "alice", "board": "weekly", "score": 14, "rank": 1}
        problem(await write(s, "default", "alice", "action_id", await ticket("quick")), 422)
        problem(await s.client.post("/score", json={"user_id": "alice",
                                                    "action_id": await ticket("run")},
                                    headers=s.auth("alice")), 422)  # a best board: no tickets
        assert (await s.client.get("/users/alice")).status_code == 404  # default untouched
        plain = await s.client.post("/score", json={"user_id": "alice",
                                                    "action_id": await ticket("plain")},
                                    headers=s.auth("alice"))
        assert plain.json()["score"] == 3


# -- reading --------------------------------------------------------------------------


async def test_paging_meets_every_entry_once(server: Server) -> None:
    await make(server, "golf", sort="asc")
    for i in range(300):  # many ties: 1-30 strokes
        assert (await write(server, "golf", f"p{i:03d}", "increment", 1 + i % 30)
                ).status_code == 200
    whole = []
    url: str | None = "/boards/golf/scores?limit=37"
    pages = 0
    while url is not None:
        r = await server.client.get(url)
        assert r.status_code == 200, r.text
        whole += r.json()
        url = next_link(r)
        pages += 1
    assert pages == 9 and len(whole) == 300
    assert [e["rank"] for e in whole] == list(range(1, 301))
    assert len({e["user_id"] for e in whole}) == 300
    scores = [e["score"] for e in whole]
    assert scores == sorted(scores)
    second = next_link(await server.client.get("/boards/golf/scores?limit=100&after=" +
                                                parse_qs(urlsplit(next_link(
                                                    await server.client.get(
                                                        "/boards/golf/scores?limit=100"))
                                                    or "").query)["after"][0]))
    assert second is not None
    last = await server.client.get(second)
    assert len(last.json()) == 100 and "link" not in last.headers  # the last page: none


async def test_paging_while_the_board_changes(server: Server) -> None:
    """Entries that do not change meet the pages exactly once, whatever moves around them."""
    for i in range(200):
        await server.post(f"p{i:03d}", 1 + i % 7, sub="root", scope="scoreboard:admin")
    movers = {f"p{i:03d}" for i in range(0, 200, 9)}
    rng = random.Random(7)
    seen: list[str] = []
    url: str | None = "/scores?limit=23"
    while url is not None:
        r = await server.client.get(url)
        page = r.json()
        assert [e["rank"] for e in page] == sorted(e["rank"] for e in page)
        seen += [e["user_id"] for e in page]
        url = next_link(r)
        for mover in rng.sample(sorted(movers), 3):  # moves between the pages
            await server.post(mover, rng.randint(1, 9), sub="root", scope="scoreboard:admin")
    steady = [u for u in seen if u not in movers]
    assert sorted(steady) == sorted(f"p{i:03d}" for i in range(200) if f"p{i:03d}" not in movers)


async def test_a_cursor_is_the_servers_for_that_board_only(server: Server) -> None:
    await make(server, "weekly")
    for i in range(5):
        await server.post(f"u{i}", 5 + i)
        await write(server, "weekly", f"u{i}", "increment", 5 + i)
    link = next_link(await server.client.get("/scores?limit=2"))
    assert link is not None
    cursor = parse_qs(urlsplit(link).query)["after"][0]
    assert (await server.client.get(f"/boards/default/scores?limit=2&after={cursor}")
            ).status_code == 200
    problem(await server.client.get(f"/boards/weekly/scores?after={cursor}"), 422)
    body, tag = cursor.split(".")
    other = "B" if tag[0] == "A" else "A"
    for forged in (cursor + "x", f"{body}.{other}{tag[1:]}", "nope", "", f"{tag}.{body}"):
        problem(await server.client.get(f"/scores?after={forged}"), 422)
    problem(await server.client.get("/boards/weekly/scores?limit=0"), 422)


async def test_board_pages_have_etags(server: Server) -> None:
    await make(server, "weekly")
    await write(server, "weekly", "alice", "increment", 1)
    first = await server.client.get("/boards/weekly/scores")
    again = await server.client.get("/boards/weekly/scores",
                                    headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and first.headers["cache-control"] == "no-cache"
    await write(server, "weekly", "alice", "increment", 1)
    changed = await server.client.get("/boards/weekly/scores",
                                      headers={"If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200


async def test_around_me(server: Server) -> None:
    for i in range(30):
        await server.post(f"u{i:02d}", 100 - i)
    around = (await server.client.get("/boards/default/users/u10/around?above=2&below=3")).json()
    assert [e["rank"] for e in around] == [9, 10, 11, 12, 13, 14]
    assert around[2]["user_id"] == "u10"
    top = (await server.client.get("/boards/default/users/u00/around")).json()
    assert [e["rank"] for e in top] == list(range(1, 12))  # slid: 5 + 5 + 1 from the top
    for bad in ("above=51", "below=-1", "above=x"):
        problem(await server.client.get(f"/boards/default/users/u10/around?{bad}"), 422)
    problem(await server.client.get("/boards/default/users/nobody/around"), 404)
    me = (await server.client.get("/boards/default/users/u03")).json()
    assert (me["rank"], me["score"]) == (4, 97)


async def test_friends_ranks(server: Server) -> None:
    for i in range(10):
        await server.post(f"u{i}", 10 + i)
    r = await server.client.post("/boards/default/ranks",
                                 json={"user_ids": ["u2", "nobody", "u7", "u2"]})
    assert r.json() == [
        {"rank": 3, "user_id": "u7", "name": "u7", "score": 17},
        {"rank": 8, "user_id": "u2", "name": "u2", "score": 12}]
    for bad in ({"user_ids": []}, {"user_ids": ["u"] * 101}, {"user_ids": "u1"},
                {"user_ids": ["bad id"]}, {}, {"user_ids": ["u1"], "x": 1}):
        problem(await server.client.post("/boards/default/ranks", json=bad), 422)
    problem(await server.client.post("/boards/nope/ranks", json={"user_ids": ["u1"]}), 404)


async def test_a_users_boards(server: Server) -> None:
    await make(server, "zeta")
    await make(server, "alpha", **SPEEDRUN)
    await server.post("alice", 4)
    await write(server, "zeta", "alice", "increment", 2)
    await write(server, "alpha", "alice", "score", 30)
    await write(server, "alpha", "bob", "score", 20)
    assert (await server.client.get("/users/alice/boards")).json() == [
        {"board": "alpha", "season": 1, "rank": 2, "score": 30},
        {"board": "default", "season": 1, "rank": 1, "score": 4},
        {"board": "zeta", "season": 1, "rank": 1, "score": 2}]
    assert (await server.client.get("/users/carol/boards")).json() == []


# -- moderation ---------------------------------------------------------------------


async def test_a_ban_holds_on_every_board(server: Server) -> None:
    await make(server, "weekly")
    await server.post("mallory", 5)
    await write(server, "weekly", "mallory", "increment", 5)
    await server.client.post("/admin/users/mallory/ban", headers=admin(server))
    for board in ("default", "weekly"):
        assert (await server.client.get(f"/boards/{board}/scores")).json() == []
        problem(await write(server, board, "mallory", "increment", 1), 403)
    await server.client.post("/admin/users/mallory/unban", headers=admin(server))
    assert len((await server.client.get("/boards/weekly/scores")).json()) == 1


async def test_revert_by_board(server: Server) -> None:
    await make(server, "high", operator="best")
    await make(server, "weekly")
    await write(server, "high", "alice", "score", 50)
    await server.post("alice", 5)
    await asyncio.sleep(0.01)
    since = (await server.client.get("/admin/users/alice", headers=admin(server))).json()[
        "ledger"][0]["at"]
    await asyncio.sleep(0.01)
    await write(server, "high", "alice", "score", 90)
    await write(server, "weekly", "alice", "increment", 7)
    await server.post("alice", 5)
    r = await server.client.post("/admin/users/alice/revert", headers=admin(server),
                                 json={"since": since, "board": "high"})
    assert r.json() == {"user_id": "alice", "score": 50, "reverted": 1}
    assert (await server.client.get("/boards/high/users/alice")).json()["score"] == 50
    assert (await server.client.get("/users/alice")).json()["score"] == 10  # untouched
    r = await server.client.post("/admin/users/alice/revert", headers=admin(server),
                                 json={"since": since})
    assert r.json()["reverted"] == 3 and r.json()["score"] == 0  # the default board's
    assert (await server.client.get("/boards/weekly/users/alice")).json()["score"] == 0
    r = await server.client.post("/admin/users/alice/revert", headers=admin(server),
                                 json={"since": "2000-01-01T00:00:00Z", "board": "high"})
    assert r.json()["reverted"] == 1
    problem(await server.client.get("/boards/high/users/alice"), 404)  # none left: it goes
    problem(await server.client.post("/admin/users/alice/revert", headers=admin(server),
                                     json={"since": since, "board": "nope"}), 404)


# -- live ---------------------------------------------------------------------------


async def test_a_boards_own_stream(server: Server) -> None:
    await make(server, "weekly")
    async with stream(server.client, path="/boards/weekly/stream") as sse:
        assert (await sse.next()).data == []
        await server.post("alice", 9)  # another board: nothing here
        await write(server, "weekly", "bob", "increment", 4)
        event = await sse.next()
        assert [e["user_id"] for e in event.data] == ["bob"]
        await server.client.delete("/admin/boards/weekly", headers=admin(server))
        with pytest.raises(EOFError):  # a deleted board's streams end
            while True:
                await sse.next(timeout=2)


def ws_url(server: Server, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/scores/ws" + query


async def test_a_websocket_follows_several_boards(server: Server) -> None:
    await make(server, "weekly")
    await make(server, "daily")
    await server.post("alice", 3)
    async with websockets.connect(ws_url(server, "?boards=weekly,nope,default")) as ws:
        first = [json.loads(await asyncio.wait_for(ws.recv(), 2)) for _ in range(3)]
        assert {m["type"] for m in first} == {"scores", "error"}
        boards = {m["board"]: m for m in first if m["type"] == "scores"}
        assert set(boards) == {"weekly", "default"} and boards["default"]["scores"][0][
            "user_id"] == "alice"
        assert "nope" in next(m for m in first if m["type"] == "error")["detail"]
        await write(server, "weekly", "bob", "increment", 2)
        pushed = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert pushed["board"] == "weekly" and pushed["version"] > boards["weekly"]["version"]
        await ws.send(json.dumps({"type": "subscribe", "boards": ["daily"]}))
        daily = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert (daily["type"], daily["board"], daily["scores"]) == ("scores", "daily", [])
        await server.post("carol", 50)  # default: no longer followed
        await write(server, "daily", "dora", "increment", 1)
        assert json.loads(await asyncio.wait_for(ws.recv(), 2))["board"] == "daily"
        for bad in ("not json", json.dumps({"type": "dance"}),
                    json.dumps({"type": "subscribe", "boards": []})):
            await ws.send(bad)
            assert json.loads(await asyncio.wait_for(ws.recv(), 2))["type"] == "error"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url(server, "?boards=" + ",".join(
                f"b{i}" for i in range(21)))):
            pass
    assert refused.value.response.status_code == 422


async def test_a_deleted_board_leaves_a_websocket_and_the_rest_stands(server: Server) -> None:
    await make(server, "weekly")
    async with websockets.connect(ws_url(server, "?boards=weekly,default")) as ws:
        first = [json.loads(await asyncio.wait_for(ws.recv(), 2)) for _ in range(2)]
        assert {m["board"] for m in first} == {"weekly", "default"}
        await server.client.delete("/admin/boards/weekly", headers=admin(server))
        said = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert said["type"] == "error" and "weekly" in said["detail"]
        await server.post("alice", 7)  # the default board's pushes go on, on this socket
        pushed = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert (pushed["type"], pushed["board"]) == ("scores", "default")
        assert pushed["scores"][0]["user_id"] == "alice"
