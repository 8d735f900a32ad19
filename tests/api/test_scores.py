"""The read and write paths through HTTP: happy paths, ordering, ETags."""

from __future__ import annotations

import asyncio

from tests.support import Server, problem


async def test_post_then_read(server: Server) -> None:
    r = await server.post("alice", 5, name="Alice")
    assert r.status_code == 200
    assert r.json() == {"user_id": "alice", "score": 5, "rank": 1}
    assert r.headers["cache-control"] == "no-store"

    r = await server.client.get("/scores")
    assert r.status_code == 200
    assert r.json() == [{"rank": 1, "user_id": "alice", "name": "Alice", "score": 5}]
    assert r.headers["cache-control"] == "no-cache"

    r = await server.client.get("/users/alice")
    assert r.json() == {"rank": 1, "user_id": "alice", "name": "Alice", "score": 5}
    assert r.headers["cache-control"] == "no-cache"


async def test_totals_accumulate_and_rank(server: Server) -> None:
    for user, inc in [("a", 10), ("b", 30), ("c", 20), ("a", 25)]:
        assert (await server.post(user, inc)).status_code == 200
    board = (await server.client.get("/scores")).json()
    assert [(e["rank"], e["user_id"], e["score"]) for e in board] == [
        (1, "a", 35), (2, "b", 30), (3, "c", 20),
    ]
    assert (await server.client.get("/users/c")).json()["rank"] == 3


async def test_ties_go_to_who_reached_the_total_first(server: Server) -> None:
    await server.post("early", 10)
    await server.post("late", 5)
    await server.post("late", 5)  # reaches 10 after "early" did
    board = (await server.client.get("/scores")).json()
    assert [e["user_id"] for e in board] == ["early", "late"]
    r = await server.post("early", 1)
    await server.post("late", 1)
    assert r.json()["rank"] == 1
    assert [e["user_id"] for e in (await server.client.get("/scores")).json()] == ["early", "late"]


async def test_limit(server: Server) -> None:
    await asyncio.gather(*(server.post(f"u{i}", i + 1) for i in range(15)))
    assert len((await server.client.get("/scores")).json()) == 10
    board = (await server.client.get("/scores", params={"limit": 3})).json()
    assert [e["score"] for e in board] == [15, 14, 13]
    assert len((await server.client.get("/scores?limit=100")).json()) == 15
    for bad in ["0", "101", "-1", "abc", "1.5", "", "٣"]:
        problem(await server.client.get("/scores", params={"limit": bad}), 422)


async def test_etag_and_304(server: Server) -> None:
    await server.post("alice", 1)
    first = await server.client.get("/scores")
    etag = first.headers["etag"]
    again = await server.client.get("/scores", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    await server.post("alice", 1)
    changed = await server.client.get("/scores", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    # The ETag names the content of this page: another limit is another page.
    other = await server.client.get("/scores?limit=5", headers={"If-None-Match": etag})
    assert other.status_code == 200


async def test_unknown_user_is_404(server: Server) -> None:
    problem(await server.client.get("/users/nobody"), 404)


async def test_name_is_latest_own_update_and_cleaned(server: Server) -> None:
    await server.post("bob", 1, name="Bob")
    await server.post("bob", 1)  # no name: keeps "Bob"
    assert (await server.client.get("/users/bob")).json()["name"] == "Bob"
    await server.post("bob", 1, name="\u202eevil\u0000 name" + "x" * 100)
    name = (await server.client.get("/users/bob")).json()["name"]
    assert name == ("evil name" + "x" * 100)[:64]
    # An administrator's update for bob does not rename bob.
    await server.post("bob", 1, sub="root", scope="scoreboard:admin", name="Root")
    assert (await server.client.get("/users/bob")).json()["name"] == name


async def test_name_falls_back_to_user_id(server: Server) -> None:
    await server.post("carol", 2)
    assert (await server.client.get("/scores")).json()[0]["name"] == "carol"


async def test_scores_survive_a_restart(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server() as s:
        await s.post("alice", 7, name="Alice")
        await s.post("bob", 7)
    async with make_server() as s:
        board = (await s.client.get("/scores")).json()
        assert board == [
            {"rank": 1, "user_id": "alice", "name": "Alice", "score": 7},
            {"rank": 2, "user_id": "bob", "name": "bob", "score": 7},
        ]
