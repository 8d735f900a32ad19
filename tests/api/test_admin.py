"""Moderation and detection through HTTP: views, bans, reverts, flags, the audit."""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
import time
from pathlib import Path
from typing import Any

from scoreboard.model import ActionKind
from tests.live.sse import stream
from tests.support import Server, problem

ADMIN = {"sub": "root", "scope": "scoreboard:admin"}


def admin(server: Server) -> dict[str, str]:
    return server.auth(**ADMIN)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


async def test_admin_routes_need_the_admin_scope(server: Server) -> None:
    await server.post("alice", 1)
    routes = [("GET", "/admin/users/alice"), ("POST", "/admin/users/alice/ban"),
              ("POST", "/admin/users/alice/unban"), ("POST", "/admin/users/alice/revert"),
              ("GET", "/admin/suspicious")]
    for method, path in routes:
        problem(await server.client.request(method, path), 401)
        problem(await server.client.request(method, path, headers=server.auth("alice")), 403)
        problem(await server.client.request(method, path, headers=server.auth(
            "mallory", scope="scoreboard:admins")), 403)


async def test_view_shows_ledger_and_security_events(server: Server) -> None:
    await server.post("alice", 3, name="Alice")
    await server.post("alice", 4)
    problem(await server.post("bob", 1, sub="alice"), 403)  # a security event for alice
    await asyncio.sleep(0.05)  # events are written by the next group commit
    view = (await server.client.get("/admin/users/alice", headers=admin(server))).json()
    assert {k: view[k] for k in ("user_id", "name", "score", "rank", "banned", "flags")} == {
        "user_id": "alice", "name": "Alice", "score": 7, "rank": 1, "banned": False,
        "flags": []}
    assert view["boards"] == [{"board": "default", "score": 7}]
    assert [e["delta"] for e in view["ledger"]] == [4, 3]  # newest first
    assert view["ledger"][0]["source"] == "increment"
    assert [e["kind"] for e in view["events"]] == ["other_user"]
    problem(await server.client.get("/admin/users/nobody", headers=admin(server)), 404)


async def test_ban_takes_a_user_off_every_board_and_refuses_writes(server: Server) -> None:
    await server.post("alice", 50)
    await server.post("bob", 10)
    async with stream(server.client) as sse:
        first = await sse.next()
        assert [e["user_id"] for e in first.data] == ["alice", "bob"]
        view = (await server.client.post("/admin/users/alice/ban", headers=admin(server))).json()
        assert view["banned"] is True and view["rank"] is None and view["score"] == 50
        update = await sse.next(timeout=1)
        assert update.id > first.id
        assert [e["user_id"] for e in update.data] == ["bob"]
    assert [e["user_id"] for e in (await server.client.get("/scores")).json()] == ["bob"]
    problem(await server.client.get("/users/alice"), 404)
    body = problem(await server.post("alice", 1), 403)
    assert "banned" in body["detail"]
    problem(await server.post("alice", 1, sub="root", scope="scoreboard:admin"), 403)
    problem(await server.client.post("/actions", json={"kind": "demo"},
                                     headers=server.auth("alice")), 403)
    view = (await server.client.post("/admin/users/alice/unban", headers=admin(server))).json()
    assert view["banned"] is False and view["rank"] == 1
    assert (await server.post("alice", 1)).json() == {"user_id": "alice", "score": 51, "rank": 1}


async def test_revert_since_a_time(server: Server) -> None:
    await server.post("alice", 30)
    await server.post("bob", 20)
    await asyncio.sleep(0.02)
    since = now_rfc3339()
    await server.post("alice", 40)
    await server.post("alice", 5)
    assert (await server.client.get("/users/alice")).json()["score"] == 75
    async with stream(server.client) as sse:
        await sse.next()
        r = await server.client.post("/admin/users/alice/revert", json={"since": since},
                                     headers=admin(server))
        assert r.json() == {"user_id": "alice", "score": 30, "reverted": 2}
        live = await sse.next(timeout=1)
        assert [(e["user_id"], e["score"]) for e in live.data] == [("alice", 30), ("bob", 20)]
    again = await server.client.post("/admin/users/alice/revert", json={"since": since},
                                     headers=admin(server))
    assert again.json()["reverted"] == 0  # nothing is undone twice
    ledger = (await server.client.get("/admin/users/alice", headers=admin(server))).json()["ledger"]
    assert ledger[0]["delta"] == -45 and ledger[0]["source"] == "revert:root"
    for bad in ({}, {"since": "yesterday"}, {"since": "2026-11-27T10:00:00"}, {"since": 5}):
        problem(await server.client.post("/admin/users/alice/revert", json=bad,
                                          headers=admin(server)), 422)


async def test_too_fast_actions_flag_a_user(make_server) -> None:  # type: ignore[no-untyped-def]
    slow = ActionKind("slow", points=5, min_seconds=30, ttl_seconds=60)
    async with make_server(actions=(slow,)) as s:
        ticket = (await s.client.post("/actions", json={"kind": "slow"},
                                      headers=s.auth("speedy"))).json()
        problem(await s.client.post("/score", json={"user_id": "speedy",
                                                    "action_id": ticket["action_id"]},
                                    headers=s.auth("speedy")), 409)
        flagged = (await s.client.get("/admin/suspicious", headers=admin(s))).json()
        assert [(f["user_id"], f["reasons"]) for f in flagged] == [("speedy", ["too_fast"])]
        assert flagged[0]["since"].endswith("Z")
        view = (await s.client.get("/admin/users/speedy", headers=admin(s))).json()
        assert view["flags"] == ["too_fast"]
        metrics = (await s.client.get("/metrics")).text
        assert 'scoreboard_users_flagged_total{reason="too_fast"} 1.0' in metrics


async def test_unusual_velocity_is_flagged(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(max_increment=1000) as s:
        for i in range(20):  # the population: small, steady players
            await s.post(f"player{i}", 5)
        for _ in range(3):
            await s.post("farmer", 200)  # 600 points in a minute: > 500 and > 10 x p95
        flagged: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5  # checked a quarter second after the writes
        while not flagged and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            flagged = (await s.client.get("/admin/suspicious", headers=admin(s))).json()
        assert [(f["user_id"], f["reasons"]) for f in flagged] == [("farmer", ["velocity"])]
        metrics = (await s.client.get("/metrics")).text
        assert 'scoreboard_users_flagged_total{reason="velocity"} 1.0' in metrics


async def test_moderation_is_audited_and_survives_a_restart(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with make_server() as s:
        await s.post("alice", 9)
        await s.post("bob", 1)
        await s.client.post("/admin/users/alice/ban", headers=admin(s))
        await s.client.get("/admin/users/bob", headers=admin(s))
        problem(await s.post("carol", 1, sub="eve"), 403)
        for _ in range(3):
            problem(await s.post("carol", 1, sub="eve"), 403)  # foreign writes: flagged
        await asyncio.sleep(0.05)
    async with make_server() as s:
        assert [e["user_id"] for e in (await s.client.get("/scores")).json()] == ["bob"]
        flagged = (await s.client.get("/admin/suspicious", headers=admin(s))).json()
        assert [(f["user_id"], f["reasons"]) for f in flagged] == [("eve", ["foreign_writes"])]
    conn = sqlite3.connect(tmp_path / "scoreboard.db")
    rows = conn.execute("SELECT admin, action, target FROM audit ORDER BY id").fetchall()
    assert rows[:2] == [("root", "ban", "alice"), ("root", "view", "bob")]
    assert ("root", "suspicious", "*") in rows
