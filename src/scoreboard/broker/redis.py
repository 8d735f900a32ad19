"""RedisBroker: snapshots between instances over Redis pub/sub.

A message goes to this process's receivers at once, then to the channel, from which
every instance (this one too: its hub drops what it already has) hands it on — while
it is not degraded. On the wire a snapshot is ``S``, the version, the season and its
start as 8 bytes each, the board id's length as a byte, the id, then the top 10's
JSON; moves are ``M`` and a JSON array (origin, board, season, moves); a notice is
``N``, its kind, a NUL, the board id. When the subscription breaks,
the broker re-subscribes as soon as Redis answers and calls the reconnect callbacks, so
each instance pushes fresh snapshots for whatever it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import struct
from collections.abc import Awaitable, Callable

import orjson
import structlog

from scoreboard.broker.base import Message, Moves, Notice, Snapshot
from scoreboard.errors import describe
from scoreboard.redislink import FAILURES, RedisLink

log = structlog.get_logger("scoreboard.broker")

RESUBSCRIBE_SECONDS = 0.25
_HEAD = struct.Struct(">QQQ")  # version, season, season start (ms)


class RedisBroker:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._channel = link.key("snapshots")
        self._receivers: list[Callable[[Message], None]] = []
        self._reconnected: list[Callable[[], Awaitable[None]]] = []
        self._listener: asyncio.Task[None] | None = None
        self._origin = secrets.token_hex(8)  # this process, on the moves it publishes

    def subscribe(self, receiver: Callable[[Message], None]) -> None:
        self._receivers.append(receiver)

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._reconnected.append(callback)

    async def publish(self, *messages: Message) -> None:
        for message in messages:
            self._deliver(message)
        if not self._link.up or not messages:
            return  # degraded: each instance pushes what it reads from the store
        wire = [encode(dataclasses.replace(m, origin=self._origin) if isinstance(m, Moves)
                       else m) for m in messages]
        try:
            if len(wire) == 1:
                await self._link.client.publish(self._channel, wire[0])
                return
            async with self._link.client.pipeline(transaction=False) as pipe:
                for data in wire:
                    pipe.publish(self._channel, data)
                await pipe.execute()
        except FAILURES as error:
            self._link.lost(error)

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="redis-broker")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        self._receivers.clear()

    def _deliver(self, message: Message) -> None:
        for receiver in self._receivers:
            receiver(message)

    async def _listen(self) -> None:
        subscribed_before = False
        while True:
            pubsub = self._link.subscriber.pubsub(ignore_subscribe_messages=True)
            listening = False
            try:
                await pubsub.subscribe(self._channel)
                listening = True
                if subscribed_before:
                    log.info("broker_resubscribed")
                    for callback in self._reconnected:
                        await callback()
                subscribed_before = True
                async for message in pubsub.listen():
                    decoded = decode(message["data"])
                    # While this instance is degraded it shows the store; a snapshot of a
                    # Redis board without its own unmirrored writes would go backwards.
                    if isinstance(decoded, Moves) and decoded.origin == self._origin:
                        continue  # handed to this process's receivers when published
                    if decoded is not None and (self._link.up
                                                or not isinstance(decoded, Snapshot)):
                        self._deliver(decoded)
            except FAILURES as error:
                if listening:
                    log.warning("broker_disconnected", detail=describe(error))
            finally:
                with contextlib.suppress(*FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RESUBSCRIBE_SECONDS)


def encode(message: Message) -> bytes:
    if isinstance(message, Snapshot):
        board = message.board.encode()
        return (b"S" + _HEAD.pack(message.version, message.season, message.season_started_ms)
                + bytes([len(board)]) + board + message.scores)
    if isinstance(message, Moves):
        return b"M" + orjson.dumps([message.origin, message.board, message.season,
                                    message.moves])
    return b"N" + message.kind.encode() + b"\x00" + message.board.encode()


def decode(data: object) -> Message | None:
    """A message off the channel; None for anything else (ignored)."""
    if not isinstance(data, bytes) or len(data) < 2:
        return None
    if data[:1] == b"S" and len(data) > _HEAD.size + 1:
        version, season, started_ms = _HEAD.unpack_from(data, 1)
        size = data[_HEAD.size + 1]
        start = _HEAD.size + 2
        return Snapshot(data[start:start + size].decode(), version, data[start + size:],
                        season, started_ms)
    if data[:1] == b"M":
        try:
            origin, board, season, moves = orjson.loads(data[1:])
            return Moves(board, season, None if moves is None else tuple(
                (user, before, after) for user, before, after in moves), origin)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None
    if data[:1] == b"N" and b"\x00" in data:
        kind, _, board = data[1:].partition(b"\x00")
        return Notice(kind.decode(), board.decode())
    return None
