"""Headers every answer owes (API.md, Transport and Errors): one of each, the right
WWW-Authenticate, ETags on the public reads, and problems even where the framework or
the server would answer on their own (a CORS refusal, malformed HTTP)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.support import Server, problem


def repeated(response: httpx.Response) -> list[str]:
    names = Counter(name.lower() for name, _ in response.headers.raw)
    return [name.decode() for name, count in names.items() if count > 1]


async def test_no_answer_carries_a_header_twice(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(cors_origins=("https://game.example",), rate_limit="2/minute") as s:
        c = s.client
        scores = await c.get("/scores")
        answers = [
            await c.get("/"), await c.get("/docs"), await c.get("/static/app.js"),
            scores, await c.get("/scores", headers={"If-None-Match": scores.headers["etag"]}),
            await c.get("/users/nobody"), await c.get("/nope"), await c.delete("/scores"),
            await c.get("/healthz"), await c.get("/readyz"), await c.get("/metrics"),
            await c.get("/openapi.json"), await c.post("/score"), await s.post("alice", 1),
            await s.post("alice", 1), await s.post("alice", 1),  # the third is a 429
            await c.options("/score", headers={"Origin": "https://game.example",
                                               "Access-Control-Request-Method": "POST"}),
            await c.get("/scores", headers={"Origin": "https://game.example"}),
        ]
        answers.append(await c.get("/users/alice"))
        assert {r.status_code for r in answers} >= {200, 304, 401, 404, 405, 429}
        for r in answers:
            assert repeated(r) == [], (r.request.method, r.request.url.path, r.status_code)


async def test_www_authenticate_says_invalid_token_only_for_a_bad_one(server: Server) -> None:
    """RFC 6750 3.1: a request with no bearer token gets a bare challenge."""
    for headers in ({}, {"Authorization": "Basic YTpi"}):
        r = await server.client.post("/score", json={}, headers=headers)
        problem(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"
    for token in ("x.y.z", server.token(ttl=-100)):
        r = await server.client.post("/score", json={}, headers={"Authorization": f"Bearer {token}"})
        problem(r, 401)
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_users_entry_has_an_etag(server: Server) -> None:
    await server.post("alice", 5)
    first = await server.client.get("/users/alice")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    for match in (etag, f'W/{etag}', f'"other", {etag}', "*"):
        r = await server.client.get("/users/alice", headers={"If-None-Match": match})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    await server.post("alice", 1)
    changed = await server.client.get("/users/alice", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    problem(await server.client.get("/users/nobody", headers={"If-None-Match": "*"}), 404)


async def test_a_refused_cors_preflight_is_a_problem(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(cors_origins=("https://game.example",)) as s:
        r = await s.client.options("/score", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        body = problem(r, 400)
        assert "origin" in body["detail"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in r.headers
        ok = await s.client.options("/score", headers={
            "Origin": "https://game.example", "Access-Control-Request-Method": "POST"})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://game.example"


async def test_malformed_http_is_a_problem(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /scores HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)).decode("latin-1").lower()
    body = await asyncio.wait_for(reader.read(), 2)
    writer.close()
    assert head.startswith("http/1.1 400")
    assert "content-type: application/problem+json" in head
    assert "x-content-type-options: nosniff" in head
    assert b'"status":400' in body
