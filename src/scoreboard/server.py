"""Runs the app under uvicorn as ``scoreboard serve`` does."""

from __future__ import annotations

import gc
import ssl
import sys

import structlog
import uvicorn
from starlette.types import ASGIApp

from scoreboard.app import create_app
from scoreboard.logs import configure_logging
from scoreboard.settings import Settings
from scoreboard.tls import self_signed_certificate
from scoreboard.transport.http import receipt_protocol
from scoreboard.transport.server import Server
from scoreboard.transport.websocket import bounded_websocket_protocol

log = structlog.get_logger("scoreboard.server")

# Connections (and requests in progress) past the live-stream cap before new requests
# get 503: room for ordinary requests and idle keep-alive connections while every
# stream slot is taken. See docs/operations.md, "Transport and slow clients".
CONNECTION_MARGIN = 4096
BACKLOG = 2048  # uvicorn's default, said out loud; the kernel caps it at net.core.somaxconn


def make_config(app: ASGIApp, host: str, port: int, certfile: str | None = None,
                keyfile: str | None = None, *, settings: Settings | None = None,
                limit_concurrency: int | None = None) -> uvicorn.Config:
    """uvicorn, configured. Without ``settings``, the defaults' receipt deadline and caps."""
    settings = settings or Settings.from_env({})
    if limit_concurrency is None:
        limit_concurrency = settings.live_max + CONNECTION_MARGIN
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=receipt_protocol(settings.receipt_timeout),
        ws=bounded_websocket_protocol(settings.live_stall_seconds),
        limit_concurrency=limit_concurrency,
        backlog=BACKLOG,
        log_level="warning",
        access_log=False,  # the app writes one structured line per request
        proxy_headers=False,  # client addresses are the peers'; see docs/operations.md
        server_header=False,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        ssl_ciphers="ECDHE+AESGCM:ECDHE+CHACHA20",
        lifespan="on",
        ws_max_size=16384,  # subscribe messages, and auth messages with a token of up to 8 KiB
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        timeout_graceful_shutdown=10,
    )
    if certfile:
        # TLS 1.2 and 1.3 only: uvicorn builds the context; raise its floor.
        config.load()
        if isinstance(config.ssl, ssl.SSLContext):
            config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    return config


def serve(settings: Settings, host: str, port: int, certfile: str | None = None,
          keyfile: str | None = None, self_signed: bool = False) -> int:
    configure_logging(settings.log_level)
    if self_signed:
        cert_path, key_path, fingerprint = self_signed_certificate(settings.data_dir)
        certfile, keyfile = str(cert_path), str(key_path)
        log.warning("self_signed_certificate", certfile=certfile, sha256=fingerprint,
                    detail="HTTPS for local use; clients must trust this certificate")
        print(f"scoreboard: HTTPS with the self-signed certificate {certfile}\n"
              f"scoreboard: its SHA-256 fingerprint is {fingerprint}", file=sys.stderr)
    config = make_config(create_app(settings), host, port, certfile, keyfile, settings=settings)
    # Fewer, larger young-generation collections: the default (700 allocations) ran the
    # collector every few requests, and older-generation passes stalled writes.
    gc.set_threshold(50_000, 20, 100)
    server = Server(config)
    server.run()
    return 0 if server.started else 1
