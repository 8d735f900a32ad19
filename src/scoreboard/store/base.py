"""The Store: the source of truth for totals, the ledger and idempotency records."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from scoreboard.model import (
    Flag,
    RankedUser,
    SecurityEvent,
    StoredResponse,
    Ticket,
    UserRecord,
    UserTotal,
)


class Transaction(Protocol):
    """Work inside one store transaction; nothing is visible or durable before it commits."""

    async def claim(self, user_id: str, key: str, now_ms: int) -> StoredResponse | None:
        """Take ``(user_id, key)`` for this transaction: ``None`` when it was free (the
        caller then ``remember``s the answer under it, or ``release``s it), else the
        response remembered under it. A transaction that took the key and has not ended
        makes this wait for it, so two transactions never both apply one key."""

    async def add(self, user_id: str, delta: int, name: str | None, source: str,
                  now_ms: int) -> UserTotal | None:
        """Append ``delta`` to the ledger and return the user's new total.

        ``None`` (and nothing written) when the total would pass 2^53 - 1. A ``name``
        replaces the stored one; ``None`` keeps it.
        """

    async def remember(self, user_id: str, key: str, response: StoredResponse) -> None:
        """Record the response to ``(user_id, key)``, claimed in this transaction."""

    async def release(self, user_id: str, key: str) -> None:
        """Give back a key claimed in this transaction: its request changed nothing."""

    async def issue_ticket(self, ticket: Ticket, now_ms: int) -> None: ...

    async def find_ticket(self, ticket_id: str) -> Ticket | None: ...

    async def redeem_ticket(self, ticket_id: str, now_ms: int) -> bool:
        """Mark the ticket redeemed; False when it already was (nothing changes then)."""

    async def unredeem_ticket(self, ticket_id: str) -> None:
        """Undo this transaction's redemption: the update it paid for was refused."""

    async def banned_among(self, user_ids: Sequence[str]) -> set[str]:
        """Which of ``user_ids`` are banned, as committed when this is asked."""

    async def flag(self, user_id: str, reason: str, now_ms: int) -> bool:
        """Flag the user for ``reason``; False when already flagged for it."""

    async def record_events(self, events: Sequence[SecurityEvent]) -> None: ...

    async def audit(self, admin: str, action: str, target: str, detail: str,
                    now_ms: int) -> int:
        """Record an administrative action; its id (ids only grow)."""

    async def ban(self, user_id: str, by: str, now_ms: int) -> bool:
        """Ban ``user_id``; False when already banned."""

    async def unban(self, user_id: str) -> UserTotal | None:
        """Lift a ban; the user's total (to put back on the board), if any."""

    async def revert(self, user_id: str, since_ms: int, source: str,
                     now_ms: int) -> tuple[UserTotal | None, int]:
        """Undo the user's increments at or after ``since_ms`` with one compensating entry.

        Returns the new total (``None`` for a user with none) and how many entries were
        undone. An entry is undone at most once; compensating entries are never undone.
        """

    async def rank_of(self, total: UserTotal) -> int:
        """The rank ``total`` has in the store, this transaction's changes included."""

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

    async def find_response(self, user_id: str, key: str) -> StoredResponse | None:
        """Read a remembered response outside any transaction."""

    async def totals(self) -> list[UserTotal]:
        """Every user's total except banned users', to rebuild the ranking from."""

    async def banned(self) -> set[str]: ...

    async def top(self, limit: int) -> list[RankedUser]:
        """The board in rank order, read from the store (while the ranking is away)."""

    async def ranked(self, user_id: str) -> RankedUser | None:
        """The user's rank and score, read from the store; ``None`` when not on the board."""

    async def user_record(self, user_id: str, limit: int) -> UserRecord:
        """The user's total, ban, newest ledger entries and security events."""

    async def flags(self) -> list[Flag]:
        """Every flagged user's reasons, longest-flagged first."""

    async def points_since(self, user_ids: Sequence[str], since_ms: int) -> dict[str, int]:
        """The points each of ``user_ids`` was given at or after ``since_ms`` (increments
        and tickets, not reverts), on every instance: what velocity detection counts."""
