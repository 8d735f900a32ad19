"""The WebSocket handshake and connection, against ``scoreboard serve`` in its own process:
bounded buffers (a ping flood), and the same edge as every HTTP request (head size,
security headers, access log, metrics)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ServerProcess

HANDSHAKE = (
    "GET /scores/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{extra}\r\n"
)


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


PER_ADDRESS = 3


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"SCOREBOARD_LIVE_MAX_PER_ADDRESS": str(PER_ADDRESS)}
    with ServerProcess(tmp_path_factory.mktemp("ws"), env) as server:
        yield server


async def handshake(port: int, extra: str = "") -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(HANDSHAKE.format(key=key, extra=extra).encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, value = line.split(": ", 1)
            assert name.lower() not in headers, f"{name} twice"
            headers[name.lower()] = value
    return reader, writer, int(lines[0].split()[1]), headers


def ping_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x89, 0x80 | len(payload)]) + mask + masked


async def test_a_ping_flood_from_a_client_that_never_reads_is_bounded(
        ws_server: ServerProcess) -> None:
    """Pings are answered with pongs; a client that never reads them used to grow the
    server without bound (79 -> 137 MB from one socket). Now the server stops reading it
    once its replies pile up, and aborts it when they do not drain."""
    assert ws_server.proc is not None
    pid = ws_server.proc.pid
    rss_before = vm_kib(pid, "VmRSS")
    reader, writer, status, _ = await handshake(ws_server.port)
    assert status == 101
    burst = ping_frame(b"p" * 125) * 512  # 67 KB of pings a write
    sent = 0
    stalled_at = None
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        while time.monotonic() - started < 4.0:
            writer.write(burst)
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except TimeoutError:
                stalled_at = time.monotonic() - started  # the server stopped reading us
                break
            sent += len(burst)
    rss_flooded = vm_kib(pid, "VmRSS")
    grown = rss_flooded - rss_before
    print(f"\nping flood: {sent / 1e6:.1f} MB of pings taken before the server stopped "
          f"reading ({stalled_at} s); server RSS {rss_before / 1024:.1f} -> "
          f"{rss_flooded / 1024:.1f} MiB")
    assert stalled_at is not None, f"the server read {sent / 1e6:.0f} MB of pings in 4 s"
    assert grown < 16 * 1024, f"RSS grew {grown} KiB"

    # Its replies never drain: the connection is aborted after the drain deadline (5 s).
    deadline = time.monotonic() + 10
    aborted = False
    while time.monotonic() < deadline and not aborted:
        aborted = any('"websocket_aborted"' in line for line in ws_server.log_lines())
        await asyncio.sleep(0.2)
    assert aborted, "the stuck connection was not aborted"
    with contextlib.suppress(ConnectionError):
        writer.close()
    events = [json.loads(line) for line in ws_server.log_lines()
              if '"websocket_aborted"' in line]
    assert events[0]["reason"] == "not_draining" and events[0]["client"] == "127.0.0.1"
    assert vm_kib(pid, "VmRSS") - rss_before < 16 * 1024
    del reader


def access_lines(server: ServerProcess, path: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in server.log_lines() if line.startswith("{")]
    return [e for e in lines if e.get("event") == "request" and e.get("path") == path]


async def test_every_handshake_answer_passes_the_edge(ws_server: ServerProcess) -> None:
    """101, 403 and 429 carry the security headers; each is one access-log line and a
    request metric, as any HTTP request is."""
    readers = []
    _reader, writer, status, headers = await handshake(ws_server.port, "X-Request-ID: ws-one\r\n")
    assert status == 101
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert headers["x-request-id"] == "ws-one"
    readers.append(writer)

    _, foreign, status, headers = await handshake(ws_server.port, "Origin: https://evil.example\r\n")
    assert status == 403 and headers["content-type"] == "application/problem+json"
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
    foreign.close()

    for _ in range(PER_ADDRESS - 1):
        readers.append((await handshake(ws_server.port))[1])
    _, over, status, headers = await handshake(ws_server.port)
    assert status == 429 and headers["retry-after"].isdigit()
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
    over.close()
    for w in readers:
        w.close()

    await asyncio.sleep(0.3)  # the access log is written in batches every 100 ms
    statuses = sorted(e["status"] for e in access_lines(ws_server, "/scores/ws"))  # type: ignore[type-var]
    assert statuses.count(101) >= PER_ADDRESS and 403 in statuses and 429 in statuses
    assert any(e["request_id"] == "ws-one" and e["route"] == "/scores/ws"
               for e in access_lines(ws_server, "/scores/ws"))
    metrics = httpx.get(ws_server.url + "/metrics").text
    for status in (101, 403, 429):
        assert (f'scoreboard_http_requests_total{{method="GET",route="/scores/ws",'
                f'status="{status}"}}') in metrics


async def test_a_large_handshake_head_gets_431_like_any_request(ws_server: ServerProcess) -> None:
    """A 120 KB head (15 header lines of 8 KB, each under the WebSocket parser's own
    limit) is refused, as a plain GET's is, instead of being upgraded."""
    filler = "".join(f"X-Filler-{i}: {'a' * 8000}\r\n" for i in range(15))
    _, writer, status, headers = await handshake(ws_server.port, filler)
    writer.close()
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-content-type-options"] == "nosniff"
