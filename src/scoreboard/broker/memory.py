"""MemoryBroker: hands snapshots to the hubs of this process. Serves a single node only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from scoreboard.broker.base import Snapshot


class MemoryBroker:
    def __init__(self) -> None:
        self._receivers: list[Callable[[Snapshot], None]] = []

    def subscribe(self, receiver: Callable[[Snapshot], None]) -> None:
        self._receivers.append(receiver)

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        return None  # in-process: never disconnected

    async def publish(self, snapshot: Snapshot) -> None:
        for receiver in self._receivers:
            receiver(snapshot)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._receivers.clear()
