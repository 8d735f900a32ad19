"""The Broker: carries what changed from the instance that wrote it to every hub.

Three kinds of message, on one channel: a board's new top 10 (``Snapshot``); the
entries of a board that moved in one commit (``Moves``), from which each instance tells
which of its signed-in clients saw their own neighbourhood change; and a ``Notice``
that boards changed (created, retitled, deleted, a season reset) so that every
instance reloads its list of boards. The broker never sees clients; the hubs fan out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A board's top 10 at one moment: the JSON array of its scores, and its version.

    ``version`` is the board's version in the ranking when the top was read: it only
    grows (across restarts, instances and seasons), so a newer snapshot has a larger
    one. ``season`` is the board's season then, and when it started: the first
    snapshot of a season tells live clients that one began.
    """

    board: str
    version: int
    scores: bytes
    season: int = 1
    season_started_ms: int = 0


@dataclass(frozen=True, slots=True)
class Notice:
    """Something about boards changed on some instance: ``kind`` says what."""

    kind: str  # "boards": the list of boards changed
    board: str


# One entry that moved: its user, and its place before and after (the score in rank
# order, smaller is better: see ``model.place``); None where it was not on the board.
Move = tuple[str, int | None, int | None]


@dataclass(frozen=True, slots=True)
class Moves:
    """The entries of a board's season that one commit moved; ``moves`` None when any
    entry may have moved (a ban, a revert, a new season)."""

    board: str
    season: int
    moves: tuple[Move, ...] | None
    origin: str = ""  # the publishing process (a broker drops its own, already handed on)


Message = Snapshot | Notice | Moves


class Broker(Protocol):
    """Guarantee: every subscriber eventually receives each board's newest snapshot, and
    every notice (unless the broker was away: then ``on_reconnect`` callbacks run).

    Intermediate snapshots may be skipped (newest wins); a subscriber never gets one
    older than a snapshot it already has — the hub drops those by version.
    """

    def subscribe(self, receiver: Callable[[Message], None]) -> None:
        """Call ``receiver`` (on the event loop) with each message that arrives."""

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback`` each time the broker is back after losing its connection:
        messages may have been missed meanwhile."""

    async def publish(self, *messages: Message) -> None:
        """Hand ``messages`` (in order) to this process's receivers at once, and to every
        other instance's, together (one round trip); never raises for a broker that is
        away."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
