"""The Store: the source of truth for boards, entries, the ledger and idempotency records.

A group commit is shaped for few round trips: ``read`` takes everything a batch of
writes needs at once (its keys claimed, its users locked, their bans, tickets and
entries, ledger ids), the writer decides in memory, and ``write`` / ``remember`` send
the results as set-based statements. Rare work (moderation, boards, events) has verbs
of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from scoreboard.model import (
    Board,
    BoardSpec,
    Entry,
    Flag,
    RankedUser,
    Season,
    SecurityEvent,
    StoredResponse,
    Ticket,
    UserRecord,
)

Key = tuple[str, str]  # (sub, Idempotency-Key)
Slot = tuple[str, str]  # (board, user_id)
Standing = tuple[str, int, str | None]  # user_id, score, name: a row of final standings


@dataclass(frozen=True, slots=True)
class BatchRead:
    """What a batch of writes needs before it can decide anything."""

    now_ms: int
    keys: Sequence[Key] = ()  # to claim
    users: Sequence[str] = ()  # to lock for the transaction, and read their bans
    tickets: Sequence[str] = ()  # to read (locked)
    slots: Sequence[Slot] = ()  # entries to read, on each board's current season
    ids: int = 0  # ledger ids to reserve


@dataclass(slots=True)
class BatchState:
    # A claimed key (now this transaction's) maps to None; a taken one to its answer.
    responses: dict[Key, StoredResponse | None] = field(default_factory=dict)
    banned: set[str] = field(default_factory=set)
    tickets: dict[str, Ticket] = field(default_factory=dict)
    entries: dict[Slot, Entry] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)  # reserved, increasing
    # The live boards of the slots, as committed now: their current season (a write
    # belongs to the season current when it commits), or absent once deleted.
    boards: dict[str, Board] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    id: int
    board: str
    season: int
    user_id: str
    kind: str  # add, submit, revert
    amount: int
    at_ms: int
    source: str


@dataclass(slots=True)
class BatchWrite:
    """What a batch decided: written as a handful of set-based statements."""

    ledger: list[LedgerRow] = field(default_factory=list)
    # The final entry of each (board, user) the batch changed, on the board's season.
    entries: list[tuple[Entry, int, int]] = field(default_factory=list)  # entry, season, ms
    names: dict[str, str] = field(default_factory=dict)
    redeemed: list[tuple[str, int]] = field(default_factory=list)  # ticket id, at ms
    released: list[Key] = field(default_factory=list)


class Transaction(Protocol):
    """Work inside one store transaction; nothing is visible or durable before it commits."""

    async def read(self, request: BatchRead) -> BatchState:
        """Claim ``keys`` in order (a key another open transaction holds makes this wait
        for it, then gives its answer); lock ``users`` in order until the end of the
        transaction (so that two instances' batches, a ban and a write, never interleave
        on one user); then read, as committed now, their bans, the ``tickets``, the
        slots' boards and their entries; and reserve ``ids`` ledger ids."""

    async def write(self, batch: BatchWrite) -> None:
        """Append the ledger rows, set the entries and names, mark tickets redeemed and
        give back released keys. Errors may surface only at commit."""

    async def remember(self, responses: Sequence[tuple[Key, StoredResponse]]) -> None:
        """Record each response under its key, claimed in this transaction."""

    async def issue_ticket(self, ticket: Ticket, now_ms: int) -> None: ...

    async def record_events(self, events: Sequence[SecurityEvent]) -> None: ...

    async def flag(self, user_id: str, reason: str, now_ms: int) -> bool:
        """Flag the user for ``reason``; False when already flagged for it."""

    async def audit(self, admin: str, action: str, target: str, detail: str,
                    now_ms: int) -> int:
        """Record an administrative action; its id (ids only grow)."""

    async def ban(self, user_id: str, by: str, now_ms: int) -> bool:
        """Ban ``user_id``; False when already banned."""

    async def unban(self, user_id: str, now_ms: int) -> list[Entry]:
        """Lift a ban; the user's entries on every live board (to put back)."""

    async def revert(self, user_id: str, boards: Sequence[Board], since_ms: int,
                     source: str, now_ms: int) -> tuple[list[Entry], list[Slot], int]:
        """Undo the user's writes at or after ``since_ms`` on the current season of each
        of ``boards``: an increment board gets one compensating ledger row; a best or
        set board's entry becomes what the remaining submissions give. Either way the
        entry's seq is the revert row's (the entry's newest change). Returns the
        changed entries, the (board, user) slots whose entry went, and how many ledger
        rows were undone. A row is undone at most once; reverts are never undone."""

    async def create_board(self, spec: BoardSpec, now_ms: int, max_boards: int) -> Board | str:
        """Create the board, season 1 from now; or say why not: "exists", "deleted",
        "full"."""

    async def retitle_board(self, board_id: str, title: str) -> None: ...

    async def board_to_change(self, board_id: str) -> Board | None:
        """A live board as committed now, locked against batches and other changes until
        the transaction ends (one reset at a time)."""

    async def reset_season(self, board: Board, ended_ms: int) -> Board | None:
        """Close the board's season ``board.season`` at ``ended_ms`` and open the next,
        starting then; the board as it now is, or None when it is no longer at that
        season (reset already, by this instance or another) or was deleted. The new
        season's row is unique: a reset commits once."""

    async def mark_stored(self, board_id: str, season: int, now_ms: int) -> None:
        """Every rank of the season's final standings is stored."""

    async def delete_board(self, board_id: str, now_ms: int) -> None: ...

    async def rank_of(self, board: Board, entry: Entry) -> int:
        """The entry's rank in the store, this transaction's changes included."""

    async def forget_responses(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` idempotency records created before ``before_ms``."""

    async def forget_tickets(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` tickets that expired before ``before_ms``."""


class Store(Protocol):
    """Durable storage.

    Guarantee: when the context manager of ``transaction()`` exits without an
    exception, everything done in it is committed and on stable storage, and it
    survives a crash of the process or the machine. Any failure raises
    ``StoreUnavailable`` and nothing of that transaction is kept.
    """

    async def open(self) -> None:
        """Connect and create or upgrade the schema."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    async def secret(self, name: str) -> bytes:
        """A random secret every instance shares (made on first use)."""

    async def find_response(self, user_id: str, key: str) -> StoredResponse | None:
        """Read a remembered response outside any transaction."""

    async def boards(self) -> list[Board]:
        """Every live board (not deleted), ordered by id."""

    async def entries(self, board: Board) -> Iterator[Entry]:
        """Every entry of the board's current season except banned users', with names,
        to be taken once (a big board is not held in a list)."""

    async def banned(self) -> set[str]: ...

    async def seasons(self, board_id: str) -> list[Season]:
        """The board's seasons, newest first."""

    async def season(self, board_id: str, season: int) -> Season | None: ...

    async def unstored(self) -> list[Season]:
        """Closed seasons of live boards whose final standings are not stored yet."""

    def final_standings(self, board: Board, season: Season,
                        chunk: int) -> AsyncIterator[list[Standing]]:
        """A closed season's entries in rank order, without the users banned when it
        ended, ``chunk`` at a time: what its final standings are. Read apart from the
        writer, which never waits on it."""

    async def add_standings(self, board_id: str, season: int, first_rank: int,
                            rows: Sequence[Standing]) -> None:
        """Store final standings, ``rows`` in rank order from ``first_rank``, committed in
        a short transaction of their own that holds the writer back as little as the
        store allows; a rank already stored is left as it is (the rows are the same
        whoever stores them)."""

    async def standings(self, board_id: str, season: int, limit: int,
                        after_rank: int = 0) -> list[RankedUser]:
        """A page of a closed season's stored final standings, after ``after_rank``."""

    async def standing(self, board_id: str, season: int, user_id: str) -> RankedUser | None:
        """A user's place in a closed season's stored final standings."""

    async def top(self, board: Board, limit: int, after: Entry | None = None,
                  offset: int = 0) -> list[RankedUser]:
        """The board in rank order, from just after ``after`` if given, skipping
        ``offset`` (read from the store while the ranking is away). Ranks count from the
        first entry read (``offset + 1``); with ``after``, the caller knows the first."""

    async def ahead(self, board: Board, score: int, seq: int) -> int:
        """How many entries rank ahead of the place (score, seq) on the board."""

    async def ranked(self, board: Board, user_id: str) -> RankedUser | None:
        """The user's rank and score on the board, read from the store."""

    async def count(self, board: Board) -> int:
        """Entries on the board's current season, banned users not counted."""

    async def user_record(self, user_id: str, limit: int) -> UserRecord:
        """The user's name, entries, ban, newest ledger rows, security events and flags."""

    async def flags(self) -> list[Flag]:
        """Every flagged user's reasons, longest-flagged first."""

    async def points_since(self, user_ids: Sequence[str], since_ms: int) -> dict[str, int]:
        """The points each of ``user_ids`` was given at or after ``since_ms`` (increments
        and tickets, not reverts or submitted scores), on every instance: what velocity
        detection counts."""
