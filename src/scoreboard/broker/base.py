"""The Broker: carries "the top 10 changed" from the instance that wrote to every hub."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The top 10 at one moment: the JSON array of ``GET /scores`` and its version.

    ``version`` is the ledger id of the newest increment the ranking had applied; ledger
    ids only grow (across restarts and instances), so a newer snapshot has a larger one.
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

    async def publish(self, snapshot: Snapshot) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
