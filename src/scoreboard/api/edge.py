"""The outermost ASGI layer, in front of every route.

Per request, once: a request id, the size limits (head 16 KiB -> 431, body 4 KiB ->
413, counted on the bytes actually read), the security headers, one access-log line,
the request metrics, and a last error boundary that answers problem+json without a
trace.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

import structlog
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scoreboard.api.problems import problem_body, refuse_websocket, send_error, send_problem
from scoreboard.errors import HeadersTooLarge, PayloadTooLarge, ScoreboardError
from scoreboard.logs import AccessLog
from scoreboard.metrics import Metrics

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 4 * 1024
_DATA_CSP = b"default-src 'none'; frame-ancestors 'none'"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")

log = structlog.get_logger("scoreboard.edge")
security_log = structlog.get_logger("scoreboard.security")


class Edge:
    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: AccessLog,
                 state: State | None = None,
                 before_shutdown: Callable[[], None] = lambda: None) -> None:
        self._app = app
        self.state = state or State()  # the app's parts, for the server and for tests
        self._metrics = metrics
        self._access_log = access_log
        # Called by the server when it stops accepting, before it waits for open
        # connections: long-lived streams must end then, or the stop would wait on them.
        self.before_shutdown = before_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._app(scope, receive, self._lifespan_send(send))

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path = scope["path"]
        request_id, oversized = _read_head(scope)
        status = 500
        response_started = False
        tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message = {**message, "headers": _with_security(message, request_id, tls)}
            await send(message)

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise PayloadTooLarge(f"the body is over {MAX_BODY_BYTES} bytes", "body_size")
            return message

        try:
            if oversized is not None:
                _refused_at_the_edge(scope, oversized)
                raise oversized
            await self._app(scope, receive_limited, send_with_headers)
        except ScoreboardError as error:
            if not response_started:
                await send_error(send_with_headers, error)
        except Exception:
            # Logged here with its trace; the client only ever sees a plain problem.
            log.exception("unhandled_error", request_id=request_id.decode(), path=path)
            if not response_started:
                body = problem_body(500, "the server could not answer this request")
                await send_problem(send_with_headers, 500, body)
        finally:
            self._answered(scope, request_id, status, started)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket handshake passes the same edge as a request: the head's size, the
        security headers on every answer (101, 403, 429, 431), one access-log line and
        the request metrics when the handshake is answered."""
        started = time.perf_counter()
        request_id, oversized = _read_head(scope)
        tls = scope.get("scheme") == "wss"
        answered = False

        def answer(status: int) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self._answered(scope, request_id, status, started)

        async def send_with_headers(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                message = {**message, "headers": _with_security(message, request_id, tls)}
                answer(101)
            elif kind == "websocket.http.response.start":
                message = {**message, "headers": _with_security(message, request_id, tls)}
                answer(message["status"])
            elif kind == "websocket.close" and not answered:
                answer(403)  # closed before accepting: the server refuses the handshake
            await send(message)

        try:
            if oversized is not None:
                _refused_at_the_edge(scope, oversized)
                if (await receive())["type"] == "websocket.connect":
                    await refuse_websocket(scope, send_with_headers, oversized)
                return
            await self._app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled_error", request_id=request_id.decode(), path=scope["path"])
            if not answered:
                await refuse_websocket(scope, send_with_headers, ScoreboardError(
                    "the server could not answer this request"))
        finally:
            answer(499)  # the client left before the handshake was answered

    def _answered(self, scope: Scope, request_id: bytes, status: int, started: float) -> None:
        """One access-log line and the request metrics, per request or handshake."""
        seconds = time.perf_counter() - started
        label = _route_label(scope)
        method = scope.get("method", "GET")
        self._metrics.request(label, method, status, seconds)
        client = scope.get("client")
        self._access_log.write({
            "request_id": request_id.decode(), "method": method, "path": scope["path"],
            "route": label, "status": status, "ms": round(seconds * 1000, 3),
            "client": client[0] if client else None,
        })

    def _lifespan_send(self, send: Send) -> Send:
        async def send_start_error(message: Message) -> None:
            # A start that failed for a reason of ours (the database, the install) is
            # reported as that reason, not as the framework's traceback of it.
            reason = getattr(self.state, "start_error", None)
            if message["type"] == "lifespan.startup.failed" and reason:
                message = {**message, "message": f"scoreboard could not start: {reason}"}
            await send(message)

        return send_start_error


def _with_security(message: Message, request_id: bytes, tls: bool) -> list[tuple[bytes, bytes]]:
    """The answer's headers and ours. A copy: the app may pass one list to every answer."""
    headers = list(message.get("headers", ()))
    headers.append((b"x-request-id", request_id))
    headers.append((b"x-content-type-options", b"nosniff"))
    headers.append((b"referrer-policy", b"no-referrer"))
    _secure_defaults(headers)
    if tls:
        headers.append((b"strict-transport-security", b"max-age=63072000"))
    return headers


def _refused_at_the_edge(scope: Scope, error: ScoreboardError) -> None:
    client = scope.get("client")
    security_log.warning("request_refused", reason=error.reason, status=error.status,
                         path=scope["path"], client=client[0] if client else None)


def _secure_defaults(headers: list[tuple[bytes, bytes]]) -> None:
    """``no-store`` unless the route chose caching; data answers may not run or be framed."""
    names = {name for name, _ in headers}
    if b"cache-control" not in names:
        headers.append((b"cache-control", b"no-store"))
    if b"content-security-policy" not in names:
        for name, value in headers:
            if name == b"content-type" and not value.startswith(b"text/html"):
                headers.append((b"content-security-policy", _DATA_CSP))
                break


def _read_head(scope: Scope) -> tuple[bytes, ScoreboardError | None]:
    """One pass over the request head: its request id, and whether it is too large."""
    request_id = b""
    size = len(scope.get("raw_path") or b"") + len(scope["query_string"])
    too_large: ScoreboardError | None = None
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            request_id = bytes(value)
        elif name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
            too_large = PayloadTooLarge(f"the body is over {MAX_BODY_BYTES} bytes", "body_size")
    if size > MAX_HEAD_BYTES:
        too_large = HeadersTooLarge(f"the request head is over {MAX_HEAD_BYTES} bytes", "head_size")
    return request_id or os.urandom(8).hex().encode(), too_large


def _route_label(scope: Scope) -> str:
    """The route template, never the raw path (which would explode the label set)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if "endpoint" in scope:  # a framework route without parameters (/docs, /openapi.json)
        return str(scope["path"])
    return "unmatched"
