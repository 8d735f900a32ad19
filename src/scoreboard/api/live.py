"""The live feeds: Server-Sent Events per board (``GET /scores/stream``, ``GET /boards/
{board}/stream``) and one WebSocket for any boards (``GET /scores/ws?boards=a,b``).

Plain ASGI apps over the hub: each board's snapshot at once, then every push, then a
clean end when the server stops (SSE clients reconnect by themselves after ``retry``;
WebSocket clients get close code 1012, "service restart"). A WebSocket client may send
``{"type": "subscribe", "boards": [...]}`` to replace its set of boards; an unknown
board is answered with an error message and the rest of the set stands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from starlette.types import Message, Receive, Scope, Send

from scoreboard.api.asgi import header, path_board, query
from scoreboard.api.problems import refuse_websocket
from scoreboard.errors import Forbidden, NotFound, ScoreboardError, Unprocessable
from scoreboard.live import SSE_PING, SSE_RETRY, Frames, Hub, Subscriber
from scoreboard.model import DEFAULT_BOARD, Board, is_board_id
from scoreboard.transport.http import DIRECT_BODY, DirectBody

log = structlog.get_logger("scoreboard.live")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]
WS_SERVICE_RESTART = 1012
WS_MAX_BOARDS = 20

_SSE_PING_MESSAGE: Message = {"type": "http.response.body", "body": SSE_PING, "more_body": True}

FindBoard = Callable[[str], Awaitable[Board | None]]


def _sse_message(frames: Frames) -> Message:
    return {"type": "http.response.body", "body": frames.sse, "more_body": True}


def _ws_message(frames: Frames) -> Message:
    return {"type": "websocket.send", "text": frames.ws}


def _sse_season(frames: Frames) -> Message:
    return {"type": "http.response.body", "body": frames.season_sse, "more_body": True}


def _ws_season(frames: Frames) -> Message:
    return {"type": "websocket.send", "text": frames.season_ws}


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def board_list(value: object) -> list[str]:
    """1-20 board ids, in order, duplicates dropped; 422 otherwise. (Whether each is a
    board is asked later: an unknown one is an error message, not a refusal.)"""
    if isinstance(value, str):
        value = value.split(",")
    if (not isinstance(value, list) or not 1 <= len(value) <= WS_MAX_BOARDS
            or not all(isinstance(b, str) for b in value)):
        raise Unprocessable(f"boards must be 1 to {WS_MAX_BOARDS} board ids", "bad_boards")
    return list(dict.fromkeys(value))


class LiveRoutes:
    def __init__(self, hub: Hub, find_board: FindBoard, cors_origins: tuple[str, ...]) -> None:
        self._hub = hub
        self._find_board = find_board
        self._origins = set(cors_origins)

    async def _board(self, board_id: str) -> Board | None:
        return await self._find_board(board_id) if is_board_id(board_id) else None

    # -- Server-Sent Events ---------------------------------------------------

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        board = await self._board(path_board(scope))
        if board is None:
            raise NotFound(f"no board {path_board(scope)[:64]!r}", "unknown_board")
        address = _address(scope)
        self._hub.connect(address)  # a refusal raises here: answered as problem+json
        try:
            await self._stream(board.id, address, scope, receive, send)
        finally:
            self._hub.disconnect(address)

    async def _stream(self, board_id: str, address: str, scope: Scope, receive: Receive,
                      send: Send) -> None:
        direct: DirectBody | None = scope.get("extensions", {}).get(DIRECT_BODY)  # or None
        subscriber = self._hub.join(board_id, address, send, _sse_message, _SSE_PING_MESSAGE,
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
            self._hub.connect(address)
        except ScoreboardError as error:
            await refuse_websocket(scope, send, error)
            return
        session = _Session(self, address, send)
        try:
            await send({"type": "websocket.accept"})
            await session.subscribe(boards)
            await session.serve(receive)
        finally:
            session.end()
            self._hub.disconnect(address)
        if session.reason == "shutdown":
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": WS_SERVICE_RESTART,
                            "reason": "server restarting"})

    def _origin_allowed(self, scope: Scope, origin: str) -> bool:
        if origin in self._origins:
            return True
        host = header(scope, b"host")
        scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
        return host is not None and origin == f"{scheme}://{host}"


class _Session:
    """One WebSocket: a subscriber per board, each writing from a task of its own; the
    connection's task reads what the client sends."""

    def __init__(self, routes: LiveRoutes, address: str, send: Send) -> None:
        self._routes = routes
        self._hub = routes._hub
        self._address = address
        self._send = send
        self._boards: dict[str, tuple[Subscriber, asyncio.Task[None]]] = {}
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.reason = ""

    async def subscribe(self, wanted: list[str]) -> None:
        """Make ``wanted`` the set of boards; an unknown one is an error message."""
        known = []
        for board_id in wanted:
            if await self._routes._board(board_id) is None:
                await self._error(f"no board {board_id[:64]!r}")
            else:
                known.append(board_id)
        for board_id in [b for b in self._boards if b not in known]:
            subscriber, task = self._boards.pop(board_id)
            subscriber.close("unsubscribed")
            self._hub.leave(subscriber)
        for board_id in known:
            if board_id not in self._boards:
                subscriber = self._hub.join(board_id, self._address, self._send, _ws_message,
                                            None, season_message=_ws_season)
                task = asyncio.create_task(self._run(subscriber))
                subscriber.task = task
                self._boards[board_id] = (subscriber, task)

    async def _run(self, subscriber: Subscriber) -> None:
        try:
            await subscriber.run()  # the WebSocket layer sends its own pings
        except asyncio.CancelledError:
            if subscriber.reason != "slow":
                raise
        if subscriber.reason == "board_gone":  # the other boards' pushes go on
            if self._boards.pop(subscriber.board, None) is not None:
                self._hub.leave(subscriber)
                await self._error(f"board {subscriber.board!r} was deleted")
        elif subscriber.reason in ("slow", "shutdown") and not self._ended.done():
            self._ended.set_result(subscriber.reason)  # the connection ends with it

    async def serve(self, receive: Receive) -> None:
        """Read the client's messages until it leaves or the session ends."""
        while True:
            incoming: asyncio.Future[Any] = asyncio.ensure_future(receive())
            waiting: list[asyncio.Future[Any]] = [incoming, self._ended]
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if self._ended in done:
                incoming.cancel()
                self.reason = self._ended.result()
                return
            message = incoming.result()
            if message["type"] == "websocket.disconnect":
                self.reason = "gone"
                return
            await self._handle(message.get("text"))

    async def _handle(self, text: str | None) -> None:
        try:
            request = orjson.loads(text or "")
        except orjson.JSONDecodeError:
            await self._error("messages are JSON objects")
            return
        if not isinstance(request, dict) or request.get("type") != "subscribe":
            await self._error('the known message is {"type": "subscribe", "boards": [...]}')
            return
        try:
            boards = board_list(request.get("boards"))
        except ScoreboardError as error:
            await self._error(error.detail)
            return
        await self.subscribe(boards)

    async def _error(self, detail: str) -> None:
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.send",
                              "text": orjson.dumps({"type": "error", "detail": detail}).decode()})

    def end(self) -> None:
        for subscriber, task in self._boards.values():
            subscriber.close(self.reason or "gone")
            self._hub.leave(subscriber)
            task.cancel()
        self._boards.clear()


async def _watch_http(receive: Receive, subscriber: Subscriber) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    subscriber.close("gone")
