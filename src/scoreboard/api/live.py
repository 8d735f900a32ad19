"""The live feeds: Server-Sent Events per board (``GET /scores/stream``, ``GET /boards/
{board}/stream``) and one WebSocket for any boards (``GET /scores/ws?boards=a,b``).

Plain ASGI apps over the hub: each board's snapshot at once, then every push, then a
clean end when the server stops (SSE clients reconnect by themselves after ``retry``;
WebSocket clients get close code 1012, "service restart"). A WebSocket client may send
``{"type": "subscribe", "boards": [...]}`` to replace its set of boards; an unknown
board is answered with an error message and the rest of the set stands. It may sign
in with ``{"type": "auth", "token": ...}`` (verified as a Bearer token is): from then
until the token expires it also gets its own rank on each of its boards (``personal.py``);
a bad token is an error message and close code 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from starlette.types import Message, Receive, Scope, Send

from scoreboard.api.asgi import header, path_board, query
from scoreboard.api.problems import refuse_websocket
from scoreboard.api.ws_session import CLOSE_CODES, Session, board_list
from scoreboard.auth import Identity
from scoreboard.errors import Forbidden, NotFound, ScoreboardError
from scoreboard.live import SSE_PING, SSE_RETRY, Frames, Hub, Subscriber
from scoreboard.model import DEFAULT_BOARD, Board, is_board_id
from scoreboard.personal import Personal
from scoreboard.transport.http import DIRECT_BODY, DirectBody

log = structlog.get_logger("scoreboard.live")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]

_SSE_PING_MESSAGE: Message = {"type": "http.response.body", "body": SSE_PING, "more_body": True}

FindBoard = Callable[[str], Awaitable[Board | None]]
SignIn = Callable[[str, str], Awaitable[Identity]]  # (address, token): raises if refused


def _sse_message(frames: Frames) -> Message:
    return {"type": "http.response.body", "body": frames.sse, "more_body": True}


def _sse_season(frames: Frames) -> Message:
    return {"type": "http.response.body", "body": frames.season_sse, "more_body": True}


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class LiveRoutes:
    def __init__(self, hub: Hub, find_board: FindBoard, cors_origins: tuple[str, ...],
                 personal: Personal, sign_in: SignIn) -> None:
        self.hub = hub
        self._find_board = find_board
        self._origins = set(cors_origins)
        self.personal = personal
        self.sign_in = sign_in
        self.signed_in = 0  # WebSocket connections signed in now

    async def board(self, board_id: str) -> Board | None:
        return await self._find_board(board_id) if is_board_id(board_id) else None

    # -- Server-Sent Events ---------------------------------------------------

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        board = await self.board(path_board(scope))
        if board is None:
            raise NotFound(f"no board {path_board(scope)[:64]!r}", "unknown_board")
        address = _address(scope)
        self.hub.connect(address)  # a refusal raises here: answered as problem+json
        try:
            await self._stream(board.id, address, scope, receive, send)
        finally:
            self.hub.disconnect(address)

    async def _stream(self, board_id: str, address: str, scope: Scope, receive: Receive,
                      send: Send) -> None:
        direct: DirectBody | None = scope.get("extensions", {}).get(DIRECT_BODY)  # or None
        subscriber = self.hub.join(board_id, address, send, _sse_message, _SSE_PING_MESSAGE,
                                    direct, _sse_season)
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
            self.hub.leave(subscriber)
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
        origin = header(scope, b"origin")
        if origin is not None and not self._origin_allowed(scope, origin):
            log.warning("ws_refused", reason="foreign_origin", origin=origin[:200],
                        client=_address(scope))
            await refuse_websocket(scope, send, Forbidden("this origin may not open the live "
                                                          "feed", "foreign_origin"))
            return
        address = _address(scope)
        try:
            boards = board_list(query(scope).get("boards", DEFAULT_BOARD))
            self.hub.connect(address)
        except ScoreboardError as error:
            await refuse_websocket(scope, send, error)
            return
        session = Session(self, address, send)
        try:
            await send({"type": "websocket.accept"})
            await session.subscribe(boards)
            await session.serve(receive)
        finally:
            session.end()
            self.hub.disconnect(address)
        if session.reason in CLOSE_CODES:
            code, reason = CLOSE_CODES[session.reason]
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code, "reason": reason})

    def _origin_allowed(self, scope: Scope, origin: str) -> bool:
        if origin in self._origins:
            return True
        host = header(scope, b"host")
        scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
        return host is not None and origin == f"{scheme}://{host}"


async def _watch_http(receive: Receive, subscriber: Subscriber) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    subscriber.close("gone")
