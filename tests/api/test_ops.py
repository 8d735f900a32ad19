"""Health, readiness, metrics, the API description, CORS and the headers on every response."""

from __future__ import annotations

import asyncio
import json
import re

from tests.support import Server, problem


async def test_healthz_and_readyz(server: Server) -> None:
    assert (await server.client.get("/healthz")).json() == {"status": "ok"}
    r = await server.client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "store": "up"}


async def test_readyz_503_when_the_store_does_not_answer(server: Server) -> None:
    store = server.app.state.service.store
    reader = store._reader
    reader.close()  # the store stops answering reads
    body = problem(await server.client.get("/readyz"), 503)
    assert body["store"] == "down"
    assert (await server.client.get("/healthz")).status_code == 200


async def test_metrics(server: Server) -> None:
    await server.post("alice", 1)
    await server.post("alice", 1, key="k")
    await server.post("alice", 1, key="k")
    await server.post("bob", 1, sub="alice")
    await server.client.get("/scores")
    await server.client.get("/nope")
    await asyncio.sleep(0.05)  # the refusal's security event is written by the writer
    text = (await server.client.get("/metrics")).text
    assert 'scoreboard_http_requests_total{method="POST",route="/score",status="200"} 3.0' in text
    assert 'scoreboard_http_requests_total{method="GET",route="/scores",status="200"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert 'scoreboard_http_request_duration_seconds_bucket{le="0.5",method="GET",route="/scores"}' in text
    assert 'scoreboard_score_updates_total{outcome="accepted"} 2.0' in text
    assert 'scoreboard_score_updates_total{outcome="replayed"} 1.0' in text
    assert 'scoreboard_score_updates_refused_total{reason="other_user"} 1.0' in text
    assert "scoreboard_ranking_rebuild_seconds " in text
    assert "scoreboard_live_push_latency_seconds_count" in text
    # Two accepted updates and one security event went through the group commit.
    assert "scoreboard_group_commit_batch_size_sum 3.0" in text


def no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"a key twice: {keys}"  # Swagger UI refuses it
    return dict(pairs)


async def test_openapi_describes_every_endpoint(server: Server) -> None:
    text = (await server.client.get("/openapi.json")).text
    spec = json.loads(text, object_pairs_hook=no_duplicate_keys)
    paths = spec["paths"]
    for item in paths.values():
        for operation in item.values():  # a malformed request is a 400 anywhere
            assert "400" in operation["responses"], operation.get("operationId")
    assert set(paths) >= {"/scores", "/score", "/users/{user_id}", "/healthz", "/readyz", "/metrics"}
    assert "get" in paths["/scores"] and "post" in paths["/score"]
    assert paths["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] \
        == "#/components/schemas/ScoreUpdate"
    assert {"ScoreEntry", "ScoreUpdate", "ScoreResult", "Problem"} <= set(spec["components"]["schemas"])
    assert (await server.client.get("/docs")).status_code == 200


async def test_docs_can_be_hidden(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(docs=False) as s:
        problem(await s.client.get("/docs"), 404)
        problem(await s.client.get("/docs/swagger-ui-bundle.js"), 404)
        problem(await s.client.get("/openapi.json"), 404)


async def test_security_headers_everywhere(server: Server) -> None:
    for r in [
        await server.client.get("/scores"), await server.client.get("/nope"),
        await server.post("alice", 1), await server.client.get("/healthz"),
        await server.client.post("/score"),
    ]:
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert r.headers["x-request-id"]
        assert "strict-transport-security" not in r.headers  # plain HTTP
    assert (await server.client.get("/healthz")).headers["cache-control"] == "no-store"
    page = await server.client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    docs = await server.client.get("/docs")  # its assets come from the install, not a CDN
    assert "script-src 'self';" in docs.headers["content-security-policy"]
    assert (await server.client.get("/docs/swagger-ui-bundle.js")).status_code == 200
    assert (await server.client.get("/scores")).headers["cache-control"] == "no-cache"


async def test_request_id_is_echoed_when_sane(server: Server) -> None:
    r = await server.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    for bad in ("bad id\u00e9".encode(), b"x" * 65, b"a;b"):
        r = await server.client.get("/healthz", headers={"X-Request-ID": bad})
        # Not echoed: a fresh id of the server's own (16 hex digits) instead.
        assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"]), bad


async def test_cors_only_for_configured_origins(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(cors_origins=("https://game.example",)) as s:
        preflight = await s.client.options("/score", headers={
            "Origin": "https://game.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://game.example"
        r = await s.client.get("/scores", headers={"Origin": "https://game.example"})
        assert r.headers["access-control-allow-origin"] == "https://game.example"
        evil = await s.client.get("/scores", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
        denied = await s.client.options("/score", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in denied.headers


async def test_no_cors_by_default(server: Server) -> None:
    r = await server.client.get("/scores", headers={"Origin": "https://game.example"})
    assert "access-control-allow-origin" not in r.headers


async def test_the_grafana_dashboard_only_uses_metrics_that_exist(server: Server) -> None:
    import json
    import re
    from pathlib import Path

    await server.post("alice", 1)
    text = (await server.client.get("/metrics")).text
    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"scoreboard_[a-z_]+", e)}
    assert len(names) >= 8
    with_redis_only = {"scoreboard_redis_up"}
    assert with_redis_only <= names
    assert "scoreboard_redis_up" not in text  # no "degraded" reading without Redis
    for name in names - with_redis_only:
        assert f"\n{name}" in text or f"# TYPE {name}" in text, name
