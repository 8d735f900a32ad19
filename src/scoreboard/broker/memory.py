"""MemoryBroker: hands messages to the receivers of this process. Serves a single node only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from scoreboard.broker.base import Message


class MemoryBroker:
    def __init__(self) -> None:
        self._receivers: list[Callable[[Message], None]] = []

    def subscribe(self, receiver: Callable[[Message], None]) -> None:
        self._receivers.append(receiver)

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        return None  # in-process: never disconnected

    async def publish(self, *messages: Message) -> None:
        for message in messages:
            for receiver in self._receivers:
                receiver(message)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._receivers.clear()
