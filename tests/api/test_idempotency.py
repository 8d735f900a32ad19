"""Idempotency-Key: replays, mismatches, keys in flight, and what is remembered."""

from __future__ import annotations

import asyncio

from tests.support import Server, problem


async def test_replay_is_byte_identical_and_adds_nothing(server: Server) -> None:
    first = await server.post("alice", 5, key="k-1")
    await server.post("bob", 50)  # alice's rank changes; the replay must not
    again = await server.client.post(
        "/score", content=b'{"increment": 5,   "user_id": "alice"}',  # equal as JSON
        headers={**server.auth("alice"), "Content-Type": "application/json",
                 "Idempotency-Key": "k-1"},
    )
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert (await server.client.get("/users/alice")).json()["score"] == 5


async def test_same_key_other_body_is_422(server: Server) -> None:
    await server.post("alice", 5, key="k")
    problem(await server.post("alice", 6, key="k"), 422)
    assert (await server.client.get("/users/alice")).json()["score"] == 5


async def test_keys_belong_to_the_tokens_sub(server: Server) -> None:
    assert (await server.post("alice", 1, key="shared")).status_code == 200
    r = await server.post("bob", 1, key="shared")
    assert r.status_code == 200
    assert "idempotent-replayed" not in r.headers


async def test_refused_requests_are_not_remembered(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(max_increment=10) as s:
        problem(await s.post("alice", 11, key="k"), 422)
        problem(await s.post("bob", 1, sub="alice", key="k2"), 403)
        assert (await s.post("alice", 1, key="k")).status_code == 200
        assert (await s.post("alice", 1, key="k2")).status_code == 200


async def test_concurrent_repeats_count_once(server: Server) -> None:
    answers = await asyncio.gather(*(server.post("alice", 3, key="same") for _ in range(20)))
    codes = sorted(r.status_code for r in answers)
    assert set(codes) <= {200, 409}
    ok = [r for r in answers if r.status_code == 200]
    assert ok
    assert all(r.content == ok[0].content for r in ok)
    for r in answers:
        if r.status_code == 409:
            problem(r, 409)
    assert (await server.client.get("/users/alice")).json()["score"] == 3


async def test_key_in_flight_is_409(server: Server) -> None:
    service = server.app.state.service
    gate = asyncio.Event()
    original = service._committer.submit

    async def slow_submit(job):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await original(job)

    service._committer.submit = slow_submit
    first = asyncio.create_task(server.post("alice", 1, key="slow"))
    await asyncio.sleep(0.2)
    problem(await server.post("alice", 1, key="slow"), 409)
    gate.set()
    assert (await first).status_code == 200
    replay = await server.post("alice", 1, key="slow")
    assert replay.headers["idempotent-replayed"] == "true"


async def test_replays_do_not_count_against_the_rate_limit(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(rate_limit="2/minute") as s:
        assert (await s.post("alice", 1, key="a")).status_code == 200
        for _ in range(5):
            assert (await s.post("alice", 1, key="a")).status_code == 200
        assert (await s.post("alice", 1, key="b")).status_code == 200
        problem(await s.post("alice", 1, key="c"), 429)
        assert (await s.post("alice", 1, key="a")).status_code == 200  # still a replay


async def test_every_admitted_request_counts(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(rate_limit="3/minute") as s:
        problem(await s.post("alice", "5"), 422)
        problem(await s.post("bob", 1, sub="alice"), 403)
        bad_json = await s.client.post("/score", content=b"{", headers={
            **s.auth("alice"), "Content-Type": "application/json"})
        problem(bad_json, 400)
        problem(await s.post("alice", 1), 429)
        # 429s themselves do not count: bob's limit is untouched by alice's.
        assert (await s.post("bob", 1)).status_code == 200


async def test_keys_survive_a_restart(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server() as s:
        first = await s.post("alice", 4, key="durable")
    async with make_server() as s:
        again = await s.post("alice", 4, key="durable")
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert (await s.client.get("/users/alice")).json()["score"] == 4


async def test_a_replay_is_answered_after_the_media_type_check(server: Server) -> None:
    """API.md's order: size, authentication, rate limit, media type, then the rest; a
    remembered key does not skip the media type."""
    body = b'{"user_id": "alice", "increment": 2}'
    headers = {**server.auth(), "Idempotency-Key": "typed"}
    first = await server.client.post("/score", content=body,
                                     headers={**headers, "Content-Type": "application/json"})
    assert first.status_code == 200
    problem(await server.client.post("/score", content=body,
                                     headers={**headers, "Content-Type": "text/plain"}), 415)
    again = await server.client.post("/score", content=body,
                                     headers={**headers, "Content-Type": "application/json"})
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
