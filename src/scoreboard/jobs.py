"""The writer's jobs and their outcomes.

Every write of the service is one of these jobs, so that all of them are ordered,
batched and made durable the same way (``groupcommit.py``). Score updates, tickets,
security events and flags share batches; a moderation, a board change or a season
reset runs in a transaction of its own, in its place in the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scoreboard.model import Board, BoardSpec, Entry, SecurityEvent, StoredResponse, Ticket
from scoreboard.store.base import Slot


@dataclass(frozen=True, slots=True)
class ScoreUpdate:
    sub: str
    user_id: str
    board: str  # the route's board: /score's is the default (a ticket may name another)
    amount: int  # the increment or the submitted score; 0 when a ticket decides
    name: str | None
    key: str | None
    fingerprint: str
    source: str
    action_id: str | None = None
    board_route: bool = False  # /boards/{board}/score: the answer names the board


@dataclass(frozen=True, slots=True)
class TicketRequest:
    ticket: Ticket


@dataclass(frozen=True, slots=True)
class EventBatch:
    events: tuple[SecurityEvent, ...]


@dataclass(frozen=True, slots=True)
class FlagRequest:
    """Detection flagged a user: stored once per reason, whichever instance saw it."""

    user_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Moderation:
    """An administrator's action on a user, audited in the same transaction."""

    admin: str
    action: str  # view, ban, unban, revert, suspicious
    user_id: str
    since_ms: int = 0
    board: str | None = None  # a revert's board; None: every board


@dataclass(frozen=True, slots=True)
class BoardChange:
    """An administrator's change of a board, audited in the same transaction."""

    admin: str
    action: str  # create (or retitle), delete
    spec: BoardSpec


@dataclass(frozen=True, slots=True)
class SeasonReset:
    """Close a board's season and open the next: when the schedule says (``season`` is
    the one due to close: every period due since is closed too, each at its scheduled
    time), or now, by an administrator (``admin``; ``season`` None)."""

    board: str
    season: int | None = None
    admin: str | None = None


ALONE = (Moderation, BoardChange, SeasonReset)  # each in a transaction of its own

Job = (ScoreUpdate | TicketRequest | EventBatch | FlagRequest | Moderation | BoardChange
       | SeasonReset)


@dataclass(frozen=True, slots=True)
class UpdateResult:
    response: StoredResponse
    entry: Entry | None  # None for a replay
    replayed: bool = False
    points: int = 0  # what velocity counts: an increment's or a ticket's points
    board: Board | None = None  # the entry's board as the transaction read it
    before: Entry | None = None  # the user's entry before this update


@dataclass(frozen=True, slots=True)
class Flagged:
    user_id: str
    reason: str
    new: bool  # False: already flagged for it (by this instance or another)


@dataclass(frozen=True, slots=True)
class Moderated:
    action: str
    user_id: str
    entries: list[Entry] = field(default_factory=list)  # to put on the boards
    gone: list[Slot] = field(default_factory=list)  # to take off
    reverted: int = 0


@dataclass(frozen=True, slots=True)
class BoardChanged:
    """``outcome``: created, retitled, unchanged, deleted; or refused: exists (other
    rules), deleted (the id was used), full, missing, protected (the default board)."""

    outcome: str
    board: Board | None


@dataclass(frozen=True, slots=True)
class SeasonsReset:
    """The board after a reset (None: it is gone) and the seasons the reset closed (none:
    another instance had reset it already)."""

    board: Board | None
    closed: list[int] = field(default_factory=list)


Outcome = UpdateResult | Ticket | Flagged | Moderated | BoardChanged | SeasonsReset | None
