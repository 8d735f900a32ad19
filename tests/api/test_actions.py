"""Action tickets: the server decides the points; a ticket redeems exactly once."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from scoreboard.model import ActionKind
from scoreboard.settings import Settings, SettingsError, load_actions
from tests.support import Server, problem

QUICK = ActionKind("quick", points=7, min_seconds=0, ttl_seconds=0.4)
SLOW = ActionKind("slow", points=3, min_seconds=0.3, ttl_seconds=60)


async def issue(server: Server, kind: str = "demo", sub: str = "alice") -> httpx.Response:
    return await server.client.post("/actions", json={"kind": kind}, headers=server.auth(sub))


async def redeem(server: Server, action_id: str, user_id: str = "alice", sub: str | None = None,
                 key: str | None = None, **claims: Any) -> httpx.Response:
    headers = server.auth(sub or user_id, **claims)
    if key:
        headers["Idempotency-Key"] = key
    return await server.client.post("/score", json={"user_id": user_id, "action_id": action_id},
                                    headers=headers)


def parse_time(value: str) -> datetime.datetime:
    assert value.endswith("Z")
    return datetime.datetime.fromisoformat(value)


async def test_issue_and_redeem_once(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(actions=(QUICK,)) as s:
        r = await issue(s, "quick")
        assert r.status_code == 201
        ticket = r.json()
        assert set(ticket) == {"action_id", "kind", "points", "not_before", "expires_at"}
        assert (ticket["kind"], ticket["points"]) == ("quick", 7)
        window = parse_time(ticket["expires_at"]) - parse_time(ticket["not_before"])
        assert window == datetime.timedelta(milliseconds=400)
        done = await redeem(s, ticket["action_id"], key="k1")
        assert done.status_code == 200
        assert done.json() == {"user_id": "alice", "score": 7, "rank": 1}
        problem(await redeem(s, ticket["action_id"], key="k2"), 409)  # a second redemption
        replay = await redeem(s, ticket["action_id"], key="k1")  # a retry replays
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == done.content
        assert (await s.client.get("/users/alice")).json()["score"] == 7


async def test_default_kind_is_demo(server: Server) -> None:
    ticket = (await issue(server)).json()
    assert (ticket["kind"], ticket["points"]) == ("demo", 10)
    window = parse_time(ticket["expires_at"]) - parse_time(ticket["not_before"])
    assert window == datetime.timedelta(seconds=599)  # not before 1 s, expires at 600 s


async def test_too_fast_then_in_time(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(actions=(SLOW,)) as s:
        action_id = (await issue(s, "slow")).json()["action_id"]
        body = problem(await redeem(s, action_id), 409)
        assert "too fast" in body["detail"]
        await asyncio.sleep(0.35)
        assert (await redeem(s, action_id)).json()["score"] == 3  # the early try used nothing


async def test_expired_is_410(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(actions=(QUICK,)) as s:
        action_id = (await issue(s, "quick")).json()["action_id"]
        await asyncio.sleep(0.45)
        problem(await redeem(s, action_id), 410)
        assert (await s.client.get("/users/alice")).status_code == 404


async def test_tickets_belong_to_their_user(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(actions=(QUICK,)) as s:
        action_id = (await issue(s, "quick", sub="alice")).json()["action_id"]
        problem(await redeem(s, action_id, user_id="bob"), 403)  # bob's own score: not his
        problem(await redeem(s, action_id, user_id="alice", sub="bob"), 403)  # alice's: no
        assert (await redeem(s, action_id, user_id="alice")).status_code == 200  # unspent


async def test_unknown_ticket_and_bad_bodies(server: Server) -> None:
    problem(await redeem(server, "x" * 32), 404)
    for body in ({"user_id": "alice", "action_id": "short"},
                 {"user_id": "alice", "action_id": 5},
                 {"user_id": "alice", "increment": 1, "action_id": "x" * 32},
                 {"user_id": "alice"}):
        r = await server.client.post("/score", json=body, headers=server.auth())
        problem(r, 422)
    problem(await issue(server, "nope"), 422)
    for body in ({}, {"kind": 5}, {"kind": "demo", "points": 100}):
        problem(await server.client.post("/actions", json=body, headers=server.auth()), 422)
    problem(await server.client.post("/actions", json={"kind": "demo"}), 401)
    problem(await server.client.post("/actions", content=b"{", headers={
        **server.auth(), "Content-Type": "application/json"}), 400)


async def test_concurrent_redemption_counts_once(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(actions=(QUICK,)) as s:
        action_id = (await issue(s, "quick")).json()["action_id"]
        answers = await asyncio.gather(*(redeem(s, action_id, key=f"k{i}") for i in range(20)))
        assert sorted(r.status_code for r in answers) == [200] + [409] * 19
        assert (await s.client.get("/users/alice")).json()["score"] == 7


async def test_tickets_survive_a_restart_and_still_redeem_once(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server() as s:
        action_id = (await issue(s)).json()["action_id"]
    await asyncio.sleep(1.0)  # demo: not before 1 s
    async with make_server() as s:
        assert (await redeem(s, action_id)).json()["score"] == 10
    async with make_server() as s:
        problem(await redeem(s, action_id), 409)


async def test_require_action(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(require_action=True, actions=(QUICK,)) as s:
        body = problem(await s.post("alice", 5), 403)
        assert "action" in body["detail"]
        assert (await s.post("bob", 5, sub="root", scope="scoreboard:admin")).status_code == 200
        action_id = (await issue(s, "quick")).json()["action_id"]
        assert (await redeem(s, action_id)).json()["score"] == 7


async def test_actions_have_their_own_limit(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(rate_limit="2/minute") as s:
        for _ in range(2):
            assert (await issue(s)).status_code == 201
        r = await issue(s)
        problem(r, 429)
        assert int(r.headers["retry-after"]) >= 1
        assert (await s.post("alice", 1)).status_code == 200  # updates count separately


def test_actions_file(tmp_path: Path) -> None:
    path = tmp_path / "actions.json"
    path.write_text(json.dumps({"level-up": {"points": 50, "min_seconds": 30,
                                             "ttl_seconds": 3600}}))
    env = {"SCOREBOARD_DATA_DIR": str(tmp_path), "SCOREBOARD_ACTIONS": str(path)}
    assert Settings.from_env(env).actions == (ActionKind("level-up", 50, 30.0, 3600.0),)
    for bad in ({}, {"Bad Kind": {"points": 1, "min_seconds": 0, "ttl_seconds": 1}},
                {"a": {"points": 0, "min_seconds": 0, "ttl_seconds": 1}},
                {"a": {"points": 1.5, "min_seconds": 0, "ttl_seconds": 1}},
                {"a": {"points": 1, "min_seconds": 5, "ttl_seconds": 5}},
                {"a": {"points": 1, "min_seconds": 0}}, [1]):
        path.write_text(json.dumps(bad))
        with pytest.raises(SettingsError, match="SCOREBOARD_ACTIONS"):
            load_actions(path)
