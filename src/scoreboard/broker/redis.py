"""RedisBroker: snapshots between instances over Redis pub/sub.

A snapshot goes to this process's receivers at once, then to the channel, from which
every instance (this one too: its hub drops what it already has) hands it on — while
it is not degraded. The
message is the version as 8 bytes, then the top 10's JSON. When the subscription
breaks, the broker re-subscribes as soon as Redis answers and calls the reconnect
callbacks, so each instance pushes a fresh snapshot for whatever it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from scoreboard.broker.base import Snapshot
from scoreboard.errors import describe
from scoreboard.redislink import FAILURES, RedisLink

log = structlog.get_logger("scoreboard.broker")

RESUBSCRIBE_SECONDS = 0.25


class RedisBroker:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._channel = link.key("snapshots")
        self._receivers: list[Callable[[Snapshot], None]] = []
        self._reconnected: list[Callable[[], Awaitable[None]]] = []
        self._listener: asyncio.Task[None] | None = None

    def subscribe(self, receiver: Callable[[Snapshot], None]) -> None:
        self._receivers.append(receiver)

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._reconnected.append(callback)

    async def publish(self, snapshot: Snapshot) -> None:
        self._deliver(snapshot)
        if not self._link.up:
            return  # degraded: each instance pushes what it reads from the store
        try:
            await self._link.client.publish(
                self._channel, snapshot.version.to_bytes(8, "big") + snapshot.scores)
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

    def _deliver(self, snapshot: Snapshot) -> None:
        for receiver in self._receivers:
            receiver(snapshot)

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
                    data = message["data"]
                    # While this instance is degraded it shows the store; a snapshot of a
                    # Redis board without its own unmirrored writes would go backwards.
                    if isinstance(data, bytes) and len(data) >= 8 and self._link.up:
                        self._deliver(Snapshot(int.from_bytes(data[:8], "big"), data[8:]))
            except FAILURES as error:
                if listening:
                    log.warning("broker_disconnected", detail=describe(error))
            finally:
                with contextlib.suppress(*FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RESUBSCRIBE_SECONDS)
