"""The one place that turns errors into ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

from http import HTTPStatus

import orjson
from starlette.types import Scope, Send

from scoreboard.errors import ScoreboardError, Unauthorized

PROBLEM_TYPE = "application/problem+json"
_NO_BEARER = {"missing_token", "bad_scheme"}  # reasons where no bearer token was sent


def problem_body(status: int, detail: str, title: str | None = None,
                 **extra: object) -> bytes:
    phrase = title or HTTPStatus(status).phrase
    slug = phrase.lower().replace(" ", "-")
    return orjson.dumps({
        "type": f"https://scoreboard.dev/problems/{slug}",
        "title": phrase,
        "status": status,
        "detail": detail,
        **extra,
    })


def error_headers(error: ScoreboardError) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(error, Unauthorized):
        # RFC 6750 3.1: no error code when the request carried no bearer token at all.
        challenge = b"Bearer" if error.reason in _NO_BEARER else b'Bearer error="invalid_token"'
        headers.append((b"www-authenticate", challenge))
    if error.retry_after is not None:
        headers.append((b"retry-after", str(error.retry_after).encode()))
    return headers


async def send_problem(send: Send, status: int, body: bytes,
                       headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", PROBLEM_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            *(headers or []),
        ],
    })
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: ScoreboardError) -> None:
    body = problem_body(error.status, error.detail, error.title)
    await send_problem(send, error.status, body, error_headers(error))


async def refuse_websocket(scope: Scope, send: Send, error: ScoreboardError) -> None:
    """Refuse a WebSocket handshake with an HTTP problem when the server can (the ASGI
    ``websocket.http.response`` extension), else by closing it (the server says 403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = problem_body(error.status, error.detail, error.title)
        await send({"type": "websocket.http.response.start", "status": error.status,
                    "headers": [(b"content-type", PROBLEM_TYPE.encode()),
                                (b"content-length", str(len(body)).encode()),
                                *error_headers(error)]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
