"""The Broker: carries "the top 10 changed" from the instance that wrote to every hub."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The top 10 at one moment: the JSON array of ``GET /scores`` and its version.

    ``version`` is the ranking's version when the top was read: it only grows (across
    restarts and instances), so a newer snapshot has a larger one.
    """

    version: int
    scores: bytes


class Broker(Protocol):
    """Guarantee: every subscriber eventually receives the newest published snapshot.

    Intermediate snapshots may be skipped (newest wins); a subscriber never gets one
    older than a snapshot it already has — the hub drops those by version.
    """

    def subscribe(self, receiver: Callable[[Snapshot], None]) -> None:
        """Call ``receiver`` (on the event loop) with each snapshot that arrives."""

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback`` each time the broker is back after losing its connection:
        snapshots may have been missed meanwhile."""

    async def publish(self, snapshot: Snapshot) -> None:
        """Hand ``snapshot`` to this process's receivers at once, and to every other
        instance's; never raises for a broker that is away."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
