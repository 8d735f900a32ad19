"""The Ranking: each board's order, pages, ranks and neighbours — a cache of the store."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from scoreboard.model import Board, Entry, RankedUser, Sort
from scoreboard.store.base import Transaction

TOP_WATCHED = 100  # the largest page GET /scores serves; changes below it are not "top" changes

Key = tuple[int, int, str]  # ascending order is rank order (see ``key_of``)


def key_of(sort: Sort, score: int, seq: int, user_id: str) -> Key:
    """The entry's place: best score first (the highest on a desc board, the lowest on
    an asc one), then the smaller seq (who reached it first)."""
    return (-score if sort == "desc" else score, seq, user_id)


def score_of(sort: Sort, key: Key) -> int:
    return -key[0] if sort == "desc" else key[0]


@dataclass(frozen=True, slots=True)
class Top:
    """A page of a board in rank order, the board's version when it was read, and the
    entry the page ended on (to page on from) when more follow."""

    version: int
    entries: list[RankedUser]
    next_after: Entry | None = None


def next_version(previous: int) -> int:
    """A version above ``previous`` and at least the time in microseconds.

    Tied to the clock so that a version made after a restart (or after Redis lost its
    counter) is still larger than every one before it; unique by the ``+ 1``.
    """
    return max(previous + 1, time.time_ns() // 1000)


class Ranking(Protocol):
    """Orders each board's entries by score (best first by the board's sort), equal
    scores by ``seq``, smaller first.

    Guarantee: ``apply`` takes absolute entries, so applying the same entry twice, or an
    older one after a newer one (smaller ``seq``), changes nothing; banned users'
    entries are ignored however late they come. A board's version grows with every
    change of its watched top.
    """

    async def rebuild(self, board: Board, entries: Iterable[Entry],
                      banned: set[str] | None) -> None:
        """Bring one board up to the store's entries; ``banned`` are the banned users
        (None: as they were — a new, empty board)."""

    async def drop(self, board_id: str) -> None:
        """Forget a board (deleted)."""

    async def new_season(self, board: Board) -> bool:
        """The board moved on to ``board.season`` (started empty): serve that season from
        now on, its version above the last one's. False when it already does. Entries of
        an older season are ignored from now on; an entry of a newer season moves the
        board on by itself."""

    async def close_season(self, board_id: str, season: int) -> None:
        """A closed season's final standings are stored: whatever the ranking still
        holds of it can go."""

    async def apply(self, entries: Sequence[Entry]) -> set[str]:
        """Apply committed entries; the boards whose top ``TOP_WATCHED`` changed."""

    async def remove(self, board_id: str, user_id: str) -> bool:
        """Take an entry off a board (a revert left no submission); whether the top
        changed."""

    async def ban(self, user_id: str) -> set[str]:
        """Take a user off every board until ``unban``; the boards whose top changed."""

    async def unban(self, user_id: str, entries: Sequence[Entry]) -> set[str]:
        """Let the user back, with their committed entries; the boards whose top changed."""

    async def top(self, board_id: str, limit: int, after: Entry | None = None) -> Top:
        """``limit`` entries from the best, or from just after ``after`` (an entry's
        score, seq and user: a place in the order, whether or not it is still there)."""

    async def get(self, board_id: str, user_id: str) -> RankedUser | None: ...

    async def around(self, board_id: str, user_id: str, above: int,
                     below: int) -> list[RankedUser] | None:
        """The user's entry with up to ``above`` before and ``below`` after, the window
        sliding at either end to hold ``above + below + 1`` where the board has them;
        None without an entry."""

    async def ranks(self, board_id: str, user_ids: Sequence[str]) -> list[RankedUser]:
        """The entries of those users that have one, best first."""

    async def count(self, board_id: str) -> int: ...

    async def ranks_after(self, tx: Transaction, boards: dict[str, Board],
                          entries: Sequence[Entry]) -> list[int]:
        """The rank each of ``entries`` (staged in ``tx``, not yet committed) has once it
        and the ones before it are applied. Nothing changes."""
