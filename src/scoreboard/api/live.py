"""``GET /scores/stream`` (Server-Sent Events) and ``GET /scores/ws`` (WebSocket).

Both are plain ASGI apps over the hub: the snapshot at once on connect, then every
push, then a clean end when the server stops (SSE clients reconnect by themselves
after ``retry``; WebSocket clients get close code 1012, "service restart").
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from starlette.types import Message, Receive, Scope, Send

from scoreboard.api.problems import refuse_websocket
from scoreboard.errors import Forbidden, ScoreboardError
from scoreboard.live import SSE_PING, SSE_RETRY, Frames, Hub, Subscriber
from scoreboard.transport.http import DIRECT_BODY, DirectBody

log = structlog.get_logger("scoreboard.live")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]
WS_SERVICE_RESTART = 1012


_SSE_PING_MESSAGE: Message = {"type": "http.response.body", "body": SSE_PING, "more_body": True}


def _sse_message(frames: Frames) -> Message:
    return {"type": "http.response.body", "body": frames.sse, "more_body": True}


def _ws_message(frames: Frames) -> Message:
    return {"type": "websocket.send", "text": frames.ws}


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class LiveRoutes:
    def __init__(self, hub: Hub, cors_origins: tuple[str, ...]) -> None:
        self._hub = hub
        self._origins = set(cors_origins)

    # -- Server-Sent Events ---------------------------------------------------

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A refusal (too many streams) raises here and is answered as problem+json.
        direct: DirectBody | None = scope.get("extensions", {}).get(DIRECT_BODY)  # or None
        subscriber = self._hub.join(_address(scope), send, _sse_message, _SSE_PING_MESSAGE,
                                    direct)
        # The disconnect: from our protocol when it serves us, else from ``receive``.
        watcher = None
        if direct is not None:
            direct.on_lost(lambda: subscriber.close("gone"))
        else:
            watcher = asyncio.create_task(_watch_http(receive, subscriber))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send({"type": "http.response.body", "body": SSE_RETRY, "more_body": True})
            await subscriber.run()
        except asyncio.CancelledError:
            if subscriber.reason != "slow":
                raise
            return  # dropped by the hub while stuck writing; the connection is closed
        finally:
            self._hub.leave(subscriber)
            if direct is not None:
                direct.on_lost(None)
            if watcher is not None:
                watcher.cancel()
        if subscriber.reason != "gone":
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- WebSocket ------------------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        origin = _header(scope, b"origin")
        if origin is not None and not self._origin_allowed(scope, origin):
            log.warning("ws_refused", reason="foreign_origin", origin=origin[:200],
                        client=_address(scope))
            await refuse_websocket(scope, send, Forbidden("this origin may not open the live "
                                                          "feed", "foreign_origin"))
            return
        try:
            subscriber = self._hub.join(_address(scope), send, _ws_message, None)
        except ScoreboardError as error:
            await refuse_websocket(scope, send, error)
            return
        watcher = asyncio.create_task(_watch_ws(receive, subscriber))
        try:
            await send({"type": "websocket.accept"})
            await subscriber.run()  # the WebSocket layer sends its own pings
        except asyncio.CancelledError:
            if subscriber.reason != "slow":
                raise
            return
        finally:
            self._hub.leave(subscriber)
            watcher.cancel()
        if subscriber.reason == "shutdown":
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": WS_SERVICE_RESTART,
                            "reason": "server restarting"})

    def _origin_allowed(self, scope: Scope, origin: str) -> bool:
        if origin in self._origins:
            return True
        host = _header(scope, b"host")
        scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
        return host is not None and origin == f"{scheme}://{host}"


async def _watch_http(receive: Receive, subscriber: Subscriber) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    subscriber.close("gone")


async def _watch_ws(receive: Receive, subscriber: Subscriber) -> None:
    # Clients have nothing to say; anything they send is read and dropped (the server's
    # maximum message size bounds it), and a disconnect ends the stream.
    while (await receive())["type"] != "websocket.disconnect":
        pass
    subscriber.close("gone")
