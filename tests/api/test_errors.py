"""Every row of API.md's error table, through HTTP, as application/problem+json."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest

from scoreboard.model import MAX_TOTAL
from tests.support import Server, problem

JSON = {"Content-Type": "application/json"}


async def raw(server: Server, body: bytes, headers: dict[str, str] | None = None,
              sub: str = "alice") -> httpx.Response:
    return await server.client.post(
        "/score", content=body, headers={**server.auth(sub), **JSON, **(headers or {})}
    )


@pytest.mark.parametrize("body", [
    b"", b"{", b'{"user_id": "alice", "increment": 1,}', b"nul",
    b'{"user_id": "alice", "increment": 1, "increment": 2}',
    b'{"user_id": "alice", "increment": NaN}', b'{"user_id": "alice", "increment": Infinity}',
    b'{"user_id": "alice", "increment": -Infinity}', b"\xff\xfe",
    b'{"user_id": "alice", "increment": 1} {}',
])
async def test_400_malformed_json(server: Server, body: bytes) -> None:
    problem(await raw(server, body), 400)


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_400_bad_idempotency_key(server: Server, key: str) -> None:
    r = await server.client.post(
        "/score", content=b'{"user_id": "alice", "increment": 1}',
        headers=[*server.auth().items(), *JSON.items(), ("Idempotency-Key", key.encode("utf-8"))],
    )
    problem(r, 400)


async def test_400_idempotency_key_twice(server: Server) -> None:
    r = await server.client.post(
        "/score", content=b'{"user_id": "alice", "increment": 1}',
        headers=[*server.auth().items(), *JSON.items(),
                 ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    problem(r, 400)
    assert (await server.client.get("/users/alice")).status_code == 404


@pytest.mark.parametrize("header", [
    None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt", "Bearer a.b",
    "Token abc",
])
async def test_401_bad_header(server: Server, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    r = await server.client.post("/score", json={"user_id": "alice", "increment": 1},
                                 headers=headers)
    problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_401_token_problems(server: Server) -> None:
    now = int(time.time())
    cases = {
        "wrong key": server.token(key="another-secret-that-is-long-enough-123"),
        "expired": server.token(exp=now - 100, iat=now - 200),
        "too long-lived": server.token(ttl=86400 + 3600),
        "not yet valid": server.token(nbf=now + 600),
        "invalid sub": server.token(sub="bad user!"),
        "aud without configured audience": server.token(aud="someone"),
        "no exp": __import__("jwt").encode({"sub": "alice"}, "x" * 40, algorithm="HS256"),
        "over 8 KiB": server.token(pad="x" * 9000),
        "crit header": server.token(headers={"crit": ["exp"]}),
    }
    for name, token in cases.items():
        r = await server.client.post(
            "/score", json={"user_id": "alice", "increment": 1},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 401, name
        problem(r, 401)


async def test_scheme_is_case_insensitive(server: Server) -> None:
    token = server.token()
    for scheme in ("bearer", "BEARER", "BeArEr"):
        r = await server.client.post("/score", json={"user_id": "alice", "increment": 1},
                                     headers={"Authorization": f"{scheme} {token}"})
        assert r.status_code == 200


async def test_leeway_of_30_seconds(server: Server) -> None:
    now = int(time.time())
    ok = server.token(exp=now - 10, iat=now - 100)  # expired 10 s ago: inside the leeway
    r = await server.client.post("/score", json={"user_id": "alice", "increment": 1},
                                 headers={"Authorization": f"Bearer {ok}"})
    assert r.status_code == 200


async def test_403_other_users_score(server: Server) -> None:
    problem(await server.post("bob", 1, sub="alice"), 403)
    assert (await server.client.get("/users/bob")).status_code == 404


async def test_admin_may_change_another_users_score(server: Server) -> None:
    for scope in ("scoreboard:admin", "read scoreboard:admin", ["x", "scoreboard:admin"]):
        r = await server.post("bob", 1, sub="root", scope=scope)
        assert r.status_code == 200, scope
    for scope in ("scoreboard:administrator", "Scoreboard:admin", ["scoreboard:admin2"]):
        problem(await server.post("bob", 1, sub="mallory", scope=scope), 403)


async def test_a_game_servers_write_scope(server: Server) -> None:
    """scoreboard:write: any user's score and ticket, never /admin."""
    r = await server.post("bob", 3, sub="game-server", scope="scoreboard:write")
    assert r.status_code == 200 and r.json()["score"] == 3
    ticket = (await server.client.post("/actions", json={"kind": "demo"},
                                       headers=server.auth("carol"))).json()
    await asyncio.sleep(1.05)  # the demo action's minimum time
    r = await server.client.post("/score", json={"user_id": "carol", "action_id": ticket["action_id"]},
                                 headers=server.auth("game-server", scope=["scoreboard:write"]))
    assert r.status_code == 200 and r.json()["score"] == 10
    admin = await server.client.get("/admin/suspicious",
                                    headers=server.auth("game-server", scope="scoreboard:write"))
    problem(admin, 403)
    view = await server.client.get("/admin/users/bob", headers=server.auth("root", scope="scoreboard:admin"))
    assert view.json()["ledger"][0]["source"] == "server:game-server"


async def test_two_authorization_headers_are_refused(server: Server) -> None:
    """Routes once disagreed about which of two counted (/score the last, /admin the first)."""
    good, other = server.token("root", scope="scoreboard:admin"), server.token("alice")
    for first, second in ((good, other), (other, good)):
        headers = [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]
        problem(await server.client.post("/score", json={"user_id": "alice", "increment": 1},
                                         headers=headers), 401)
        problem(await server.client.get("/admin/suspicious", headers=headers), 401)


async def test_a_lone_surrogate_in_a_keyed_body_is_a_4xx(server: Server) -> None:
    """Valid JSON, not valid UTF-8 once decoded: the idempotency fingerprint once
    crashed on it (a 500 with a traceback)."""
    body = b'{"user_id": "\\ud800", "increment": 1}'
    r = await raw(server, body, {"Idempotency-Key": "surrogate"})
    problem(r, 422)
    r = await raw(server, b'{"user_id": "alice", "increment": 1, "x": "\\udfff"}',
                  {"Idempotency-Key": "surrogate-2"})
    problem(r, 422)


async def test_404_unknown_path(server: Server) -> None:
    problem(await server.client.get("/nope"), 404)


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/score", "POST"), ("GET", "/score", "POST"), ("DELETE", "/scores", "GET, HEAD"),
    ("POST", "/healthz", "GET"),
])
async def test_405_with_allow(server: Server, method: str, path: str, allow: str) -> None:
    r = await server.client.request(method, path)
    problem(r, 405)
    assert set(r.headers["allow"].split(", ")) == set(allow.split(", "))


async def test_413_declared_and_streamed(server: Server) -> None:
    big = b'{"user_id": "alice", "increment": 1, "pad": "' + b"x" * 5000 + b'"}'
    problem(await raw(server, big), 413)

    async def chunks():  # no Content-Length: the limit counts bytes actually read
        for _ in range(10):
            yield b"x" * 1000

    r = await server.client.post("/score", content=chunks(), headers={**server.auth(), **JSON})
    problem(r, 413)


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "application/jsonx", "multipart/form-data"])
async def test_415_media_type(server: Server, ctype: str | None) -> None:
    headers = server.auth()
    if ctype:
        headers["Content-Type"] = ctype
    r = await server.client.post("/score", content=b'{"user_id":"alice","increment":1}',
                                 headers=headers)
    problem(r, 415)


async def test_json_with_charset_is_accepted(server: Server) -> None:
    r = await raw(server, b'{"user_id":"alice","increment":1}',
                  {"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200


@pytest.mark.parametrize("body", [
    b"[]", b"1", b'"x"', b"null", b"true",
    b'{"user_id": "alice"}', b'{"increment": 1}', b"{}",
    b'{"user_id": "alice", "increment": 1, "extra": 1}',
    b'{"user_id": "alice", "increment": "5"}', b'{"user_id": "alice", "increment": 5.0}',
    b'{"user_id": "alice", "increment": 1e2}', b'{"user_id": "alice", "increment": true}',
    b'{"user_id": "alice", "increment": null}', b'{"user_id": "alice", "increment": 0}',
    b'{"user_id": "alice", "increment": -1}', b'{"user_id": "alice", "increment": 101}',
    b'{"user_id": "alice", "increment": 99999999999999999999999}',
    b'{"user_id": "", "increment": 1}', b'{"user_id": 5, "increment": 1}',
    b'{"user_id": "has space", "increment": 1}',
])
async def test_422_fields(server: Server, body: bytes) -> None:
    problem(await raw(server, body), 422)


async def test_max_increment_setting(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(max_increment=1000) as s:
        assert (await s.post("alice", 1000)).status_code == 200
        problem(await s.post("alice", 1001), 422)


async def test_409_total_would_pass_2_53(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(max_increment=MAX_TOTAL) as s:
        assert (await s.post("alice", MAX_TOTAL - 1)).json()["score"] == MAX_TOTAL - 1
        problem(await s.post("alice", 2), 409)
        r = await s.post("alice", 1)
        assert r.json()["score"] == MAX_TOTAL
        problem(await s.post("alice", 1), 409)
        assert (await s.client.get("/users/alice")).json()["score"] == MAX_TOTAL


async def test_429_with_retry_after(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(rate_limit="3/minute") as s:
        for _ in range(3):
            assert (await s.post("alice", 1)).status_code == 200
        r = await s.post("alice", 1)
        problem(r, 429)
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert (await s.post("bob", 1)).status_code == 200  # per user
        assert (await s.client.get("/users/alice")).json()["score"] == 3


async def test_431_head_too_large(server: Server) -> None:
    r = await server.client.get("/scores", headers={"X-Big": "x" * 17000})
    problem(r, 431)


async def test_503_when_the_database_is_locked(make_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with make_server() as s:
        assert (await s.post("alice", 1)).status_code == 200
        locker = sqlite3.connect(tmp_path / "scoreboard.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            problem(await s.post("alice", 1), 503)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        # Nothing was acknowledged, so nothing is counted; the next write works.
        assert (await s.post("alice", 1)).json()["score"] == 2


async def test_500_is_a_problem_without_trace(server: Server) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("SELECT secret FROM internals")

    server.app.state.service.reads.page = broken
    r = await server.client.get("/scores")
    body = problem(r, 500)
    assert "internals" not in r.text
    assert body["detail"]


async def test_error_order_size_before_auth(server: Server) -> None:
    big = b"x" * 5000
    r = await server.client.post("/score", content=big)  # no token either
    problem(r, 413)


async def test_error_order_auth_before_media_type(server: Server) -> None:
    r = await server.client.post("/score", content=b"x", headers={"Content-Type": "text/plain"})
    problem(r, 401)


async def test_slow_body_is_still_limited(server: Server) -> None:
    # A raw socket that sends a huge Content-Length gets 413 without sending the body.
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert b" 413 " in status
    writer.close()
