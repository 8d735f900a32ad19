"""The Ranking: order, top-N and rank of a user — a cache of the store's totals."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from scoreboard.model import RankedUser, UserTotal
from scoreboard.store.base import Transaction

TOP_WATCHED = 100  # the largest page GET /scores serves; changes below it are not "top" changes


@dataclass(frozen=True, slots=True)
class Top:
    """The first entries of the ranking and the version of the ranking they were read at."""

    version: int
    entries: list[RankedUser]


def next_version(previous: int) -> int:
    """A version above ``previous`` and at least the time in microseconds.

    Tied to the clock so that a version made after a restart (or after Redis lost its
    counter) is still larger than every one before it; unique by the ``+ 1``.
    """
    return max(previous + 1, time.time_ns() // 1000)


class Ranking(Protocol):
    """Orders users by total, highest first; equal totals by ``seq``, smaller first.

    Guarantee: ``apply`` takes absolute totals, so applying the same total twice, or
    an older total after a newer one (smaller ``seq``), changes nothing. The version
    grows with every change of the watched top.
    """

    async def rebuild(self, totals: Iterable[UserTotal], banned: set[str]) -> None:
        """Bring the ranking up to ``totals`` (the store's); ``banned`` are the banned users."""

    async def apply(self, totals: Sequence[UserTotal]) -> bool:
        """Apply committed totals (those of banned users are ignored, however late they
        come); return whether the top ``TOP_WATCHED`` changed."""

    async def ban(self, user_id: str) -> bool:
        """Take a user off the board until ``unban``; return whether the watched top
        changed."""

    async def unban(self, user_id: str, total: UserTotal | None) -> bool:
        """Let the user back, with their committed total; whether the watched top changed."""

    async def top(self, limit: int) -> Top: ...

    async def get(self, user_id: str) -> RankedUser | None: ...

    async def ranks_after(self, tx: Transaction, totals: Sequence[UserTotal]) -> list[int]:
        """The rank of each of ``totals``, staged in ``tx`` and not yet committed, as if it
        and the ones before it were applied. Nothing changes."""
