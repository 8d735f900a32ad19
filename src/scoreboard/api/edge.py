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

from scoreboard.api.problems import problem_body, send_error, send_problem
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
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        request_id, oversized = _read_head(scope)
        status = 500
        response_started = False
        tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                # A copy: the app may pass the same header list to every response.
                headers = list(message.get("headers", ()))
                message = {**message, "headers": headers}
                headers.append((b"x-request-id", request_id))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                _secure_defaults(headers)
                if tls:
                    headers.append((b"strict-transport-security", b"max-age=63072000"))
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
                client = scope.get("client")
                security_log.warning("request_refused", reason=oversized.reason,
                                     status=oversized.status, path=path,
                                     client=client[0] if client else None)
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
            seconds = time.perf_counter() - started
            label = _route_label(scope)
            self._metrics.request(label, method, status, seconds)
            client = scope.get("client")
            self._access_log.write({
                "request_id": request_id.decode(), "method": method, "path": path,
                "route": label, "status": status, "ms": round(seconds * 1000, 3),
                "client": client[0] if client else None,
            })


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
