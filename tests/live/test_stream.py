"""SSE and WebSocket against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from typing import Any

import httpx
import pytest
import websockets

from scoreboard.broker.base import Snapshot
from tests.live.sse import stream
from tests.support import Server, problem


async def test_snapshot_at_once_then_updates(server: Server) -> None:
    await server.post("alice", 5, name="Alice")
    async with stream(server.client) as sse:
        r = sse.response
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in r.headers
        first = await sse.next(timeout=1)
        assert sse.retry == 2000
        assert first.event == "scores"
        assert first.data == (await server.client.get("/scores")).json()
        started = time.monotonic()
        await server.post("bob", 9)
        update = await sse.next(timeout=1)
        assert time.monotonic() - started < 1.0
        assert update.id > first.id
        assert [e["user_id"] for e in update.data] == ["bob", "alice"]


async def test_versions_only_grow_and_the_last_state_arrives(server: Server) -> None:
    async with stream(server.client) as sse:
        seen = [(await sse.next()).id]
        for i in range(30):
            await server.post(f"user{i}", i + 1)
        last = await sse.until(lambda e: e.data and e.data[0]["user_id"] == "user29")
        seen.append(last.id)
        assert last.data == (await server.client.get("/scores")).json()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


@pytest.mark.parametrize("last_event_id", ["garbage", "-5", "99999999999999999999", "", "3"])
async def test_reconnect_with_any_last_event_id_gets_the_snapshot(
    server: Server, last_event_id: str
) -> None:
    await server.post("alice", 3)
    async with stream(server.client, {"Last-Event-ID": last_event_id}) as sse:
        first = await sse.next(timeout=1)
        assert first.data == (await server.client.get("/scores")).json()


async def test_pushes_are_coalesced_first_change_at_once(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(push_interval_ms=1500) as s, stream(s.client) as sse:
        await sse.next()
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await s.post("a", 1)
        assert (await sse.next(timeout=1)).data[0]["score"] == 1
        assert time.monotonic() - started < 0.5  # after a quiet spell: at once
        for _ in range(2, 12):
            await s.post("a", 1)
        with pytest.raises(TimeoutError):
            await sse.next(timeout=0.5)  # held back by the interval
        coalesced = await sse.next(timeout=2)
        assert coalesced.data[0]["score"] == 11  # the newest state wins


async def test_unchanged_top_10_pushes_nothing(server: Server) -> None:
    for i in range(10):
        await server.post(f"top{i}", 50)
    await asyncio.sleep(0.2)  # let the last coalesced push go out
    async with stream(server.client) as sse:
        await sse.next()
        await server.post("minnow", 1)  # rank 11: the top 10 did not change
        with pytest.raises(TimeoutError):
            await sse.next(timeout=0.4)


async def test_live_connection_caps(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(live_max_per_address=2) as s:
        async with stream(s.client) as a, stream(s.client) as b:
            await a.next()
            await b.next()
            over = await s.client.get("/scores/stream")
            problem(over, 429)
            assert int(over.headers["retry-after"]) >= 1
        await asyncio.sleep(0.1)
        async with stream(s.client) as c:  # freed again
            await c.next()
    async with make_server(live_max=1) as s, stream(s.client) as a:
        await a.next()
        full = await s.client.get("/scores/stream")
        problem(full, 503)
        assert int(full.headers["retry-after"]) >= 1


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://") + "/scores/ws"


async def test_websocket_snapshot_and_updates(server: Server) -> None:
    await server.post("alice", 2)
    async with websockets.connect(ws_url(server)) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 1))
        assert first["type"] == "scores"
        assert first["scores"] == (await server.client.get("/scores")).json()
        await server.post("bob", 7)
        update = json.loads(await asyncio.wait_for(ws.recv(), 1))
        assert update["version"] > first["version"]
        assert update["scores"][0]["user_id"] == "bob"


async def test_websocket_origins(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(cors_origins=("https://game.example",)) as s:
        own = s.url  # the server's own origin
        for origin in (own, "https://game.example", None):
            headers: dict[str, Any] = {"Origin": origin} if origin else {}
            async with websockets.connect(ws_url(s), additional_headers=headers) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 1))["type"] == "scores"
        for origin in ("https://evil.example", "null", "http://127.0.0.1:1"):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(ws_url(s), additional_headers={"Origin": origin}):
                    pass
            assert refused.value.response.status_code == 403


async def test_a_stalled_reader_neither_delays_others_nor_is_kept(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(push_interval_ms=1, live_stall_seconds=0.5) as s:
        hub = s.app.state.hub
        host, port = s.url.removeprefix("http://").split(":")
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((host, int(port)))
        stalled.sendall(b"GET /scores/stream HTTP/1.1\r\nHost: x\r\n\r\n")  # never reads
        async with stream(s.client) as sse:
            await sse.next()
            # Hundreds of changes with 64 KiB snapshots: far more than the socket buffers
            # hold, through the real SSE writer, uvicorn's flow control and a real socket.
            padding = "x" * 65536
            base = hub.current("default").version
            started = time.monotonic()
            for v in range(1, 301):
                hub.offer(Snapshot("default", base + v, json.dumps([{"pad": padding, "v": v}]).encode()))
                await asyncio.sleep(0.002)
            final = await sse.until(lambda e: e.data[0]["v"] == 300, timeout=5)
            assert time.monotonic() - started < 3.0
            assert final.id == base + 300
            await asyncio.sleep(0.6)
            hub.offer(Snapshot("default", base + 301, b'[{"v": 301}]'))  # after the stall deadline
            await sse.until(lambda e: e.data[0]["v"] == 301, timeout=1)
        await asyncio.sleep(0.1)
        metrics = (await s.client.get("/metrics")).text
        assert 'scoreboard_live_dropped_total{reason="slow"} 1.0' in metrics
        assert "scoreboard_live_connections 0.0" in metrics  # nothing kept for it
        stalled.close()


async def test_streams_end_when_the_server_stops(make_server) -> None:  # type: ignore[no-untyped-def]
    ended = asyncio.Event()
    async with make_server() as s:
        async def watch() -> None:
            async with stream(s.client) as sse:
                await sse.next()
                with contextlib.suppress(EOFError, httpx.HTTPError):
                    await sse.next(timeout=30)
            ended.set()

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        started = time.monotonic()
    await asyncio.wait_for(ended.wait(), 5)
    assert time.monotonic() - started < 5  # the stop did not wait for the stream
    await watcher


async def test_heartbeat_comments_keep_a_quiet_stream_alive(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(live_heartbeat_seconds=0.2) as s, stream(s.client) as sse:
        await sse.next()
        await asyncio.sleep(0.7)
        assert sse.comments.count(": ping") >= 2


async def test_websocket_messages_are_small(server: Server) -> None:
    async with websockets.connect(ws_url(server)) as ws:
        await asyncio.wait_for(ws.recv(), 1)
        await ws.send("x" * 100)  # read and ignored
        await ws.send("x" * 17000)  # over the limit (16 KiB: an auth message's token fits): closed
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 2)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_push_is_one_chunk_holding_one_event(server: Server) -> None:
    """Pushes go straight to the socket, framed once for every client: each must still
    be a well-formed chunk of the chunked body, holding exactly one event."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /scores/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert b"transfer-encoding: chunked" in head.lower()

        async def next_chunk() -> bytes:
            size = int(await asyncio.wait_for(reader.readuntil(b"\r\n"), 2), 16)
            data = await asyncio.wait_for(reader.readexactly(size + 2), 2)
            assert data.endswith(b"\r\n")
            return data[:-2]

        assert (await next_chunk()).startswith(b"retry: ")
        assert (await next_chunk()).startswith(b"event: scores\nid: ")  # the snapshot
        for i in range(3):
            await server.post(f"chunked{i}", 10 + i)
            pushed = await next_chunk()
            assert pushed.startswith(b"event: scores\nid: ") and pushed.endswith(b"\n\n")
            assert pushed.count(b"event: ") == 1
            rows = json.loads(pushed.split(b"data: ", 1)[1])
            assert rows[0] == {"rank": 1, "user_id": f"chunked{i}", "name": f"chunked{i}",
                               "score": 10 + i}
    finally:
        writer.close()


async def test_a_client_joining_while_a_push_is_due_gets_that_state_once(
        make_server) -> None:  # type: ignore[no-untyped-def]
    """A new client gets the newest state at once, even a pending one; when the push of
    that state comes due it must not get it a second time (ids only grow)."""
    async with make_server(push_interval_ms=300) as s:
        await s.post("alice", 1)  # pushed at once: the first change after a quiet spell
        await s.post("alice", 1)  # pending until 300 ms after that push
        async with stream(s.client) as sse:
            first = await sse.next(timeout=1)
            assert first.data[0]["score"] == 2
            await asyncio.sleep(0.4)  # the pending push comes due
            await s.post("bob", 5)
            following = await sse.next(timeout=1)
            assert following.id > first.id
            assert [e["user_id"] for e in following.data] == ["bob", "alice"]


async def test_heartbeats_keep_their_pace_on_a_busy_board(make_server) -> None:  # type: ignore[no-untyped-def]
    """Pings ride along with pushes when the board is busy: still one at least every
    heartbeat, never more than about two per heartbeat."""
    heartbeat = 0.4
    async with make_server(live_heartbeat_seconds=heartbeat, push_interval_ms=10) as s, \
            stream(s.client) as sse:
        hub = s.app.state.hub
        await sse.next()
        started = time.monotonic()
        base = hub.current("default").version
        for v in range(1, 101):  # a change every 20 ms for 2 s
            hub.offer(Snapshot("default", base + v, b'[{"v": %d}]' % v))
            await asyncio.sleep(0.02)
        await sse.until(lambda e: e.data[0]["v"] == 100, timeout=2)
        ended = time.monotonic()
    times = [started, *[t for t in sse.comment_times if t > started], ended]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) <= heartbeat + 0.15, gaps
    assert len(times) - 2 <= 2 * (ended - started) / heartbeat + 2
