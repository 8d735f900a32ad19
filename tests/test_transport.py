"""The transport through real sockets: the receipt deadline, the head cap, the
connection cap and ``serve --self-signed``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from scoreboard.settings import Settings, SettingsError
from scoreboard.tls import CERT_FILE, KEY_FILE, self_signed_certificate
from tests.support import SECRET, ServerProcess, running, settings_for

SLOWLORIS_DEADLINE = 2.0


@contextlib.asynccontextmanager
async def serving(settings: Settings, **config: Any) -> AsyncIterator[int]:
    """The server in this event loop, configured from ``settings``; yields its port."""
    async with running(settings, **config) as server:
        yield int(server.url.rsplit(":", 1)[1])


async def wait_closed(reader: asyncio.StreamReader, timeout: float) -> float:
    """Seconds until the server closes the connection (EOF or reset); fails past ``timeout``."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {timeout} s")
    return time.monotonic() - started


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def get(path: str = "/scores") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``scoreboard serve`` in its own process, with a short receipt deadline."""
    server = ServerProcess(tmp_path_factory.mktemp("transport"),
                           env={"SCOREBOARD_RECEIPT_TIMEOUT": str(SLOWLORIS_DEADLINE),
                                "SCOREBOARD_LOG_LEVEL": "warning"})
    server.start()
    try:
        yield server
    finally:
        server.kill(signal.SIGTERM)


# The receipt deadline


async def test_slowloris_does_not_delay_others_and_is_cut_at_the_deadline(
        slow_server: ServerProcess) -> None:
    clients = 300
    head = b"GET /scores HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 64

    async def trickle() -> float:
        # Timed from before the connect: the server's deadline starts at its accept, which
        # comes after this moment however late this process resumes (a GC pause here must
        # not make the server look early).
        opened = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", slow_server.port)
        try:
            for byte in head:  # one byte every 0.5 s, never the end of the head
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        data = await reader.read(1024)
                        assert not data, f"answered a request never sent whole: {data[:40]!r}"
                        return time.monotonic() - opened
            return float("inf")
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - opened
        finally:
            writer.close()

    trickling = [asyncio.create_task(trickle()) for _ in range(clients)]
    await asyncio.sleep(0.3)  # all connected and trickling
    latencies = []
    async with httpx.AsyncClient(base_url=slow_server.url, timeout=5) as client:
        end = time.monotonic() + SLOWLORIS_DEADLINE - 0.6
        while time.monotonic() < end:
            started = time.monotonic()
            r = await client.get("/scores", headers={"Connection": "close"})
            latencies.append(time.monotonic() - started)
            assert r.status_code == 200
            await asyncio.sleep(0.05)
    closed_after = await asyncio.gather(*trickling)

    print(f"\nslowloris: {clients} trickling clients; GET /scores meanwhile: "
          f"{len(latencies)} requests, max {max(latencies) * 1000:.1f} ms; trickling clients "
          f"closed after {min(closed_after):.2f}-{max(closed_after):.2f} s "
          f"(deadline {SLOWLORIS_DEADLINE} s)")
    assert len(latencies) >= 5
    assert max(latencies) < 0.5
    assert min(closed_after) >= SLOWLORIS_DEADLINE - 0.3  # the deadline, not something sooner
    assert max(closed_after) <= SLOWLORIS_DEADLINE + 1.0
    timeouts = [json.loads(line) for line in slow_server.log_lines()
                if '"request_timeout"' in line]
    assert len(timeouts) >= clients
    assert {e["phase"] for e in timeouts} == {"head"}
    assert {e["client"] for e in timeouts} == {"127.0.0.1"}


def token(sub: str = "alice") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")


async def test_a_slow_body_is_cut_off(tmp_path: Path) -> None:
    body = json.dumps({"user_id": "alice", "increment": 1}).encode()
    head = (f"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token()}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with capture_logs() as logs:
        async with serving(settings_for(tmp_path, receipt_timeout=0.5)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + body[:1])
            sent = 1

            async def trickle() -> None:
                nonlocal sent
                with contextlib.suppress(OSError):
                    for byte in body[1:]:  # 0.1 s a byte: the body would take over 2 s
                        await asyncio.sleep(0.1)
                        writer.write(bytes([byte]))
                        await writer.drain()
                        sent += 1

            trickler = asyncio.create_task(trickle())
            seconds = await wait_closed(reader, 2.0)
            trickler.cancel()
            writer.close()
            assert sent < len(body)
            assert 0.4 <= seconds <= 1.5
            # Nothing was stored from the cut request.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/users/alice")).status_code == 404
    assert any(e["event"] == "request_timeout" and e["phase"] == "body" for e in logs)


async def test_a_connection_that_sends_nothing_is_closed(tmp_path: Path) -> None:
    with capture_logs() as logs:
        async with serving(settings_for(tmp_path, receipt_timeout=0.5)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            seconds = await wait_closed(reader, 2.0)
            writer.close()
    assert 0.4 <= seconds <= 1.5
    assert any(e["event"] == "request_timeout" and e["phase"] == "head" for e in logs)


async def test_keep_alive_idle_between_requests_is_not_cut(tmp_path: Path) -> None:
    # Deadline 0.5 s, uvicorn's keep-alive 5 s: a pause of 1.5 s between requests is
    # keep-alive idle, not a slow request.
    async with serving(settings_for(tmp_path, receipt_timeout=0.5)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(get())
            status, headers, _ = await read_response(reader)
            assert status == 200 and headers.get("connection") != "close"
            await asyncio.sleep(1.5)
        writer.write(get("/healthz"))
        assert (await read_response(reader))[0] == 200
        # A request that starts after the pause still has its own deadline.
        writer.write(b"GET /scores HTTP/1.1\r\n")
        assert 0.4 <= await wait_closed(reader, 2.0) <= 1.5
        writer.close()


async def test_a_request_sent_in_pieces_within_the_deadline_is_answered(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path, receipt_timeout=1.0)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for piece in (b"GET /sco", b"res HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
            await asyncio.sleep(0.15)
            writer.write(piece)
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_pipelined_requests_each_get_their_own_deadline(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path, receipt_timeout=0.5)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Two whole requests and the start of a third, in one write.
        writer.write(get() + get("/healthz") + b"GET /scores HTTP/1.1\r\n")
        assert (await read_response(reader))[0] == 200
        assert (await read_response(reader))[0] == 200
        assert 0.3 <= await wait_closed(reader, 2.0) <= 1.5
        writer.close()


async def test_live_streams_outlive_the_deadline(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path, receipt_timeout=0.3)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/scores/stream"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
        await reader.readuntil(b"event: scores")  # the snapshot
        async with websockets.connect(f"ws://127.0.0.1:{port}/scores/ws") as ws:
            await ws.recv()  # the snapshot
            await asyncio.sleep(1.0)  # over three deadlines, nothing sent by either client
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                r = await client.post("/score", json={"user_id": "alice", "increment": 3},
                                      headers={"Authorization": f"Bearer {token()}"})
                assert r.status_code == 200
            message = json.loads(await asyncio.wait_for(ws.recv(), 2))
            assert message["scores"][0]["user_id"] == "alice"
        await asyncio.wait_for(reader.readuntil(b'"alice"'), 2)  # the push, on the same stream
        writer.close()


# Request heads


async def test_large_heads_get_431_and_are_not_buffered(slow_server: ServerProcess) -> None:
    port = slow_server.port

    # 20 KiB, complete: the app measures it.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /scores HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20 * 1024 + b"\r\n\r\n")
    status, headers, body = await read_response(reader)
    writer.close()
    assert status == 431 and headers["content-type"] == "application/problem+json"

    # 1 MiB, streamed: refused once the cap is passed, long before the end.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    answer = asyncio.create_task(read_response(reader))
    writer.write(b"GET /scores HTTP/1.1\r\nHost: x\r\n")
    with contextlib.suppress(OSError):
        while sent < 1 << 20 and not answer.done():
            writer.write(b"X-Filler-%06d: %s\r\n" % (sent, b"b" * 4000))
            await writer.drain()
            sent += 4020
            await asyncio.sleep(0.002)
    status, headers, body = await asyncio.wait_for(answer, 2)
    writer.close()
    assert status == 431 and sent < 128 * 1024
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close" and headers["x-content-type-options"] == "nosniff"
    assert json.loads(body) == {
        "type": "https://scoreboard.dev/problems/request-header-fields-too-large",
        "title": "Request Header Fields Too Large", "status": 431,
        "detail": "the request head is over 16384 bytes",
    }

    # 50 clients sending 1 MiB heads at once: the server's peak memory does not follow.
    assert slow_server.proc is not None
    peak_before = vm_kib(slow_server.proc.pid, "VmHWM")

    async def one_mib() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /scores HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20)
                         + b"\r\n\r\n")
            await writer.drain()
            return await reader.read(12)
        except OSError:
            return b"reset"
        finally:
            writer.close()

    outcomes = await asyncio.gather(*(one_mib() for _ in range(50)))
    assert set(outcomes) <= {b"HTTP/1.1 431", b"reset"}, set(outcomes)
    grown = vm_kib(slow_server.proc.pid, "VmHWM") - peak_before
    assert grown < 16 * 1024, f"peak RSS grew {grown} KiB"  # without the cap: over 50 MiB

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=slow_server.url) as client:
        assert (await client.get("/scores")).status_code == 200
    assert time.monotonic() - started < 0.5


# The connection cap


async def test_past_the_connection_cap_requests_get_503_not_a_hang(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path), limit_concurrency=4) as port:
        held = []
        for _ in range(3):  # three open keep-alive connections
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get())
            assert (await read_response(reader))[0] == 200
            held.append((reader, writer))

        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # the fourth
        writer.write(get())
        status, headers, body = await asyncio.wait_for(read_response(reader), 2)
        assert status == 503 and headers["retry-after"] == "1"
        assert headers["content-type"] == "application/problem+json"
        assert headers["x-content-type-options"] == "nosniff"
        assert json.loads(body)["status"] == 503
        assert await wait_closed(reader, 2) < 1  # connection: close
        writer.close()

        held.pop()[1].close()
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get())
        assert (await read_response(reader))[0] == 200
        writer.close()
        for _, w in held:
            w.close()


# --self-signed


async def test_self_signed_https(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    server.start_args = ["--self-signed"]
    server.scheme = "https"
    server.start()
    try:
        cert, key = tmp_path / CERT_FILE, tmp_path / KEY_FILE
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        trust = ssl.create_default_context(cafile=str(cert))  # the certificate is its own CA
        for host in ("localhost", "127.0.0.1"):
            r = httpx.get(f"https://{host}:{server.port}/healthz", verify=trust)
            assert r.status_code == 200
            assert r.headers["strict-transport-security"].startswith("max-age=")
        fingerprint = (x509.load_pem_x509_certificate(cert.read_bytes())
                       .fingerprint(hashes.SHA256()).hex(":").upper())
        logged = [json.loads(line) for line in server.log_lines()
                  if '"self_signed_certificate"' in line]
        assert logged and logged[0]["sha256"] == fingerprint
        assert f"fingerprint is {fingerprint}" in server.log_path.read_text()
    finally:
        server.kill(signal.SIGTERM)

    # Started again: the same certificate.
    server.start()
    try:
        logged = [json.loads(line) for line in server.log_lines()
                  if '"self_signed_certificate"' in line]
        assert [e["sha256"] for e in logged] == [fingerprint, fingerprint]
    finally:
        server.kill(signal.SIGTERM)


def test_self_signed_is_remade_when_expired_and_kept_otherwise(tmp_path: Path) -> None:
    cert_path, key_path, first = self_signed_certificate(tmp_path)
    assert self_signed_certificate(tmp_path)[2] == first
    key_path.chmod(0o644)
    assert self_signed_certificate(tmp_path)[2] == first
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    expired = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now - datetime.timedelta(days=30))
               .not_valid_after(now - datetime.timedelta(days=1))
               .sign(key, hashes.SHA256()))
    cert_path.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    _, _, renewed = self_signed_certificate(tmp_path)
    assert renewed != first
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.not_valid_after_utc > now + datetime.timedelta(days=300)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_self_signed_cannot_be_combined_with_certificate_files(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scoreboard", "serve", "--self-signed",
         "--ssl-certfile", "c.pem", "--ssl-keyfile", "k.pem"],
        env={**os.environ, "SCOREBOARD_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert "--self-signed" in out.stderr


# The setting


def test_receipt_timeout_setting() -> None:
    assert Settings.from_env({}).receipt_timeout == 10.0
    assert Settings.from_env({"SCOREBOARD_RECEIPT_TIMEOUT": "2.5"}).receipt_timeout == 2.5
    assert Settings.from_env({"SCOREBOARD_RECEIPT_TIMEOUT": "30"}).receipt_timeout == 30.0
    for bad in ("0", "0.0", "-1", "abc", "nan", "inf", "1e3", "10s", "3601"):
        with pytest.raises(SettingsError, match="SCOREBOARD_RECEIPT_TIMEOUT"):
            Settings.from_env({"SCOREBOARD_RECEIPT_TIMEOUT": bad})


def test_a_bad_receipt_timeout_refuses_to_start(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scoreboard", "serve"],
        env={**os.environ, "SCOREBOARD_DATA_DIR": str(tmp_path),
             "SCOREBOARD_RECEIPT_TIMEOUT": "soon"},
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert "SCOREBOARD_RECEIPT_TIMEOUT" in out.stderr and "'soon'" in out.stderr
