"""One WebSocket of the live feed: a subscriber per board it follows, and, signed in,
the user's own rank on each (``personal.py``). See ``api/live.py`` for the routes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Message, Receive, Send

from scoreboard.errors import ScoreboardError, Unprocessable
from scoreboard.live import Frames, Subscriber
from scoreboard.model import Board

if TYPE_CHECKING:
    from scoreboard.api.live import LiveRoutes

WS_SERVICE_RESTART = 1012
WS_UNAUTHORIZED = 4401  # API.md: a bad token on the WebSocket
WS_MAX_BOARDS = 20


def _ws_message(frames: Frames) -> Message:
    return {"type": "websocket.send", "text": frames.ws}


def _ws_season(frames: Frames) -> Message:
    return {"type": "websocket.send", "text": frames.season_ws}


def board_list(value: object) -> list[str]:
    """1-20 board ids, in order, duplicates dropped; 422 otherwise. (Whether each is a
    board is asked later: an unknown one is an error message, not a refusal.)"""
    if isinstance(value, str):
        value = value.split(",")
    if (not isinstance(value, list) or not 1 <= len(value) <= WS_MAX_BOARDS
            or not all(isinstance(b, str) for b in value)):
        raise Unprocessable(f"boards must be 1 to {WS_MAX_BOARDS} board ids", "bad_boards")
    return list(dict.fromkeys(value))


_EXPIRED = "\x00expired"  # the mailbox slot of the expiry notice (no board id has a NUL)
CLOSE_CODES = {"shutdown": (WS_SERVICE_RESTART, "server restarting"),
                "unauthorized": (WS_UNAUTHORIZED, "unauthorized")}


class Session:
    """One WebSocket: a subscriber per board, each writing from a task of its own; the
    connection's task reads what the client sends. Signed in, it is also a ``MeSink``:
    the newest ``me`` message of each board waits in a one-slot mailbox per board for
    a task of its own to write (a slow client skips to the newest)."""

    def __init__(self, routes: LiveRoutes, address: str, send: Send) -> None:
        self._routes = routes
        self._hub = routes.hub
        self._personal = routes.personal
        self._address = address
        self._send = send
        # Each board followed: as found when subscribed, its subscriber and its task.
        self._boards: dict[str, tuple[Board, Subscriber, asyncio.Task[None]]] = {}
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.reason = ""
        self._user: str | None = None  # signed in as, until the token expires
        self._expiry: asyncio.TimerHandle | None = None
        self._me_mail: dict[str, str] = {}
        self._me_wake = asyncio.Event()
        self._me_writer: asyncio.Task[None] | None = None

    async def subscribe(self, wanted: list[str]) -> None:
        """Make ``wanted`` the set of boards; an unknown one is an error message."""
        known: dict[str, Board] = {}
        for board_id in wanted:
            board = await self._routes.board(board_id)
            if board is None:
                await self._error(f"no board {board_id[:64]!r}")
            else:
                known[board_id] = board
        for board_id in [b for b in self._boards if b not in known]:
            _, subscriber, _ = self._boards.pop(board_id)
            subscriber.close("unsubscribed")
            self._hub.leave(subscriber)
            self._unwatch(board_id)
        for board_id, board in known.items():
            if board_id not in self._boards:
                subscriber = self._hub.join(board_id, self._address, self._send, _ws_message,
                                            None, season_message=_ws_season)
                task = asyncio.create_task(self._run(subscriber))
                subscriber.task = task
                self._boards[board_id] = (board, subscriber, task)
                self._watch(board)

    # -- signed in: the user's own rank

    async def _auth(self, token: object) -> None:
        if not isinstance(token, str) or not token:
            await self._refuse("the auth message needs a token")
            return
        try:
            who = await self._routes.sign_in(self._address, token)
        except ScoreboardError as error:
            await self._refuse(error.detail)
            return
        self._sign_out()
        self._user = who.sub
        self._routes.signed_in += 1
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, who.expires - time.time()), self._expired)
        for board, _, _ in self._boards.values():
            self._watch(board)

    async def _refuse(self, detail: str) -> None:
        await self._error(detail)
        if not self._ended.done():
            self._ended.set_result("unauthorized")

    def _expired(self) -> None:
        """The token ran out: the personal pushes stop, the board pushes go on."""
        self._sign_out()
        self._mail(_EXPIRED, orjson.dumps({
            "type": "error", "detail": "the token expired: personal pushes stopped until "
            "an auth message with a new token"}).decode())

    def _sign_out(self) -> None:
        if self._user is None:
            return
        for board_id in self._boards:
            self._unwatch(board_id)
        self._user = None
        self._routes.signed_in -= 1
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _watch(self, board: Board) -> None:
        if self._user is not None:
            self._personal.watch(board, self._user, self)

    def _unwatch(self, board_id: str) -> None:
        if self._user is not None:
            self._personal.unwatch(board_id, self._user, self)
            self._me_mail.pop(board_id, None)

    def me(self, board: str, text: str) -> None:
        self._mail(board, text)

    def _mail(self, slot: str, text: str) -> None:
        self._me_mail[slot] = text  # newest wins
        self._me_wake.set()
        if self._me_writer is None:
            self._me_writer = asyncio.get_running_loop().create_task(self._write_me())

    async def _write_me(self) -> None:
        while True:
            await self._me_wake.wait()
            self._me_wake.clear()
            while self._me_mail:
                board = next(iter(self._me_mail))
                text = self._me_mail.pop(board)
                try:
                    await self._send({"type": "websocket.send", "text": text})
                except Exception:  # the connection is gone: the session ends with it
                    return

    async def _run(self, subscriber: Subscriber) -> None:
        try:
            await subscriber.run()  # the WebSocket layer sends its own pings
        except asyncio.CancelledError:
            if subscriber.reason != "slow":
                raise
        if subscriber.reason == "board_gone":  # the other boards' pushes go on
            if self._boards.pop(subscriber.board, None) is not None:
                self._hub.leave(subscriber)
                self._unwatch(subscriber.board)
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
        if isinstance(request, dict) and request.get("type") == "auth":
            await self._auth(request.get("token"))
            return
        if not isinstance(request, dict) or request.get("type") != "subscribe":
            await self._error('the known messages are {"type": "subscribe", "boards": '
                              '[...]} and {"type": "auth", "token": "..."}')
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
        self._sign_out()
        if self._me_writer is not None:
            self._me_writer.cancel()
        for _, subscriber, task in self._boards.values():
            subscriber.close(self.reason or "gone")
            self._hub.leave(subscriber)
            task.cancel()
        self._boards.clear()
