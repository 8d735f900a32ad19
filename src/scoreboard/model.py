"""The vocabulary every part speaks: plain, immutable records.

A *board* is a key, not a deployment: every part takes a board id in every verb. A
board's entries are per user; a user's *score* on a board is what its operator made of
their writes (a sum, the best submission, the last submission).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

MAX_TOTAL = 2**53 - 1  # exact in every JSON client, in a double and in Redis
USER_ID = re.compile(r"[A-Za-z0-9_.:@|-]{1,128}")
BOARD_ID = re.compile(r"[a-z0-9_-]{1,64}")
DEFAULT_BOARD = "default"

Sort = Literal["desc", "asc"]
Operator = Literal["increment", "best", "set"]
Reset = Literal["never", "hour", "day", "week", "month"]
SORTS: tuple[Sort, ...] = ("desc", "asc")
OPERATORS: tuple[Operator, ...] = ("increment", "best", "set")
RESETS: tuple[Reset, ...] = ("never", "hour", "day", "week", "month")


def rfc3339(ms: float) -> str:
    """Unix milliseconds as an RFC 3339 UTC time, like ``2026-11-27T10:00:00.000Z``."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def place(sort: Sort, score: int) -> int:
    """A score's place in rank order, smaller is better whatever the board's sort."""
    return -score if sort == "desc" else score


def is_user_id(value: object) -> bool:
    return isinstance(value, str) and USER_ID.fullmatch(value) is not None


def is_board_id(value: object) -> bool:
    return isinstance(value, str) and BOARD_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class BoardSpec:
    """What a board is: how it orders and how a write changes an entry."""

    id: str
    title: str
    sort: Sort = "desc"
    operator: Operator = "increment"
    reset: Reset = "never"
    timezone: str = "UTC"

    def better(self, a: int, b: int) -> bool:
        """Whether score ``a`` ranks strictly ahead of ``b`` on this board."""
        return a > b if self.sort == "desc" else a < b

    def same_rules(self, other: BoardSpec) -> bool:
        """Everything but the title: what may never change once the board exists."""
        return (self.sort, self.operator, self.reset, self.timezone) == (
            other.sort, other.operator, other.reset, other.timezone)


DEFAULT_SPEC = BoardSpec(DEFAULT_BOARD, "Scoreboard")


@dataclass(frozen=True, slots=True)
class Board:
    """A live board: its definition and its current season."""

    spec: BoardSpec
    season: int
    season_started_ms: int

    @property
    def id(self) -> str:
        return self.spec.id


class Entry(NamedTuple):
    """A user's entry on one season of a board, as the store holds it.

    ``seq`` is the ledger id of the write that reached ``score``: it only grows, so on
    equal scores the smaller ``seq`` reached the score first and ranks higher. (A tuple:
    a rebuild makes a million of them, and a tuple is made fastest.)
    """

    board: str
    season: int
    user_id: str
    score: int
    seq: int
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Season:
    """One season of a board: open while ``ended_ms`` is None; its final standings are
    stored once it closed (``stored_ms``)."""

    board: str
    season: int
    started_ms: int
    ended_ms: int | None = None
    stored_ms: int | None = None


@dataclass(frozen=True, slots=True)
class RankedUser:
    rank: int
    user_id: str
    name: str
    score: int
    seq: int = 0  # the entry's place among equal scores, where the reader knows it (pages)

    def as_dict(self) -> dict[str, object]:
        return {"rank": self.rank, "user_id": self.user_id, "name": self.name, "score": self.score}


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What an ``Idempotency-Key`` remembers: the request and the answer it got."""

    fingerprint: str
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ActionKind:
    """What one kind of action is worth, the window its ticket redeems in, and its board."""

    name: str
    points: int
    min_seconds: float
    ttl_seconds: float
    board: str = DEFAULT_BOARD


@dataclass(frozen=True, slots=True)
class Ticket:
    """A single-use promise of ``points`` on ``board`` to ``user_id``, in its window."""

    id: str
    user_id: str
    kind: str
    points: int
    not_before_ms: int
    expires_ms: int
    redeemed_ms: int | None = None
    board: str = DEFAULT_BOARD


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    board: str
    season: int
    kind: str  # add (an increment), submit (a best/set score), revert
    amount: int
    at_ms: int
    source: str


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    user_id: str
    at_ms: int
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class UserRecord:
    """What the store knows of one user, for an administrator."""

    name: str | None
    entries: list[Entry]  # on every live board's current season
    banned: bool
    ledger: list[LedgerEntry]
    events: list[SecurityEvent]
    flags: list[str]


@dataclass(frozen=True, slots=True)
class Flag:
    """Why detection flagged a user (each reason once), and since when."""

    user_id: str
    reasons: list[str]
    since_ms: int
