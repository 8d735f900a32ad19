"""The vocabulary every part speaks: plain, immutable records."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

MAX_TOTAL = 2**53 - 1  # exact in every JSON client, in a double and in Redis
USER_ID = re.compile(r"[A-Za-z0-9_.:@|-]{1,128}")


def rfc3339(ms: float) -> str:
    """Unix milliseconds as an RFC 3339 UTC time, like ``2026-11-27T10:00:00.000Z``."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_user_id(value: object) -> bool:
    return isinstance(value, str) and USER_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class UserTotal:
    """A user's total as the store holds it.

    ``seq`` is the ledger id of the increment that reached ``total``: it only grows,
    so on equal totals the smaller ``seq`` reached the total first and ranks higher.
    """

    user_id: str
    total: int
    seq: int
    name: str | None = None


@dataclass(frozen=True, slots=True)
class RankedUser:
    rank: int
    user_id: str
    name: str
    score: int

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
    """What one kind of action is worth, and the window its ticket redeems in."""

    name: str
    points: int
    min_seconds: float
    ttl_seconds: float


@dataclass(frozen=True, slots=True)
class Ticket:
    """A single-use promise of ``points`` to ``user_id``, redeemable in its window."""

    id: str
    user_id: str
    kind: str
    points: int
    not_before_ms: int
    expires_ms: int
    redeemed_ms: int | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    delta: int
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

    total: UserTotal | None
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
