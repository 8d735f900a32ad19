"""The statements both stores run, in qmark style (``?``); PostgreSQL converts them.

What the dialects write differently lives in each store's own module.
"""

from __future__ import annotations

from typing import Any

from scoreboard.model import (
    Flag,
    LedgerEntry,
    RankedUser,
    SecurityEvent,
    UserRecord,
    UserTotal,
)

ADD_LEDGER = "INSERT INTO ledger (user_id, delta, at_ms, source) VALUES (?, ?, ?, ?)"
# The rule both stores apply to a new total. The WHERE refuses an update that would pass
# 2^53 - 1 (MAX_TOTAL): no row comes back.
UPSERT_TOTAL = """
ON CONFLICT (user_id) DO UPDATE SET
    total = totals.total + excluded.total,
    seq = excluded.seq,
    reached_ms = excluded.reached_ms,
    name = coalesce(excluded.name, totals.name)
WHERE totals.total + excluded.total BETWEEN 0 AND 9007199254740991
RETURNING total, name
"""


def upserting_total(insert: str, after: str = "") -> str:
    """An ``INSERT INTO totals`` followed by the rule every new total obeys."""
    return insert + UPSERT_TOTAL + after


ADD_TOTAL = upserting_total(
    "INSERT INTO totals (user_id, total, seq, reached_ms, name) VALUES (?, ?, ?, ?, ?)"
)
FIND_RESPONSE = "SELECT fingerprint, status, body FROM idempotency WHERE user_id = ? AND key = ?"
# A key is taken by inserting its row at the start of the update: a second transaction
# with the same key waits for the first (the primary key) and then finds its answer,
# instead of failing its whole batch at commit. The answer fills the row at the end.
CLAIM = (
    "INSERT INTO idempotency (user_id, key, fingerprint, status, body, created_ms) "
    "VALUES (?, ?, '', 0, ?, ?) ON CONFLICT (user_id, key) DO NOTHING RETURNING 1"
)
REMEMBER = (
    "UPDATE idempotency SET fingerprint = ?, status = ?, body = ? WHERE user_id = ? AND key = ?"
)
RELEASE = "DELETE FROM idempotency WHERE user_id = ? AND key = ?"
ISSUE_TICKET = (
    "INSERT INTO tickets (id, user_id, kind, points, created_ms, not_before_ms, expires_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
FIND_TICKET = (
    "SELECT id, user_id, kind, points, not_before_ms, expires_ms, redeemed_ms "
    "FROM tickets WHERE id = ?"
)
REDEEM_TICKET = (
    "UPDATE tickets SET redeemed_ms = ? WHERE id = ? AND redeemed_ms IS NULL RETURNING id"
)
UNREDEEM_TICKET = "UPDATE tickets SET redeemed_ms = NULL WHERE id = ?"
FLAG = (
    "INSERT INTO flags (user_id, reason, since_ms) VALUES (?, ?, ?) "
    "ON CONFLICT (user_id, reason) DO NOTHING RETURNING 1"
)
FLAGS = "SELECT user_id, reason, since_ms FROM flags ORDER BY since_ms, user_id, reason"
FLAGS_OF = "SELECT reason FROM flags WHERE user_id = ? ORDER BY reason"
# Points a user was given since a moment: what velocity counts (reverts are not points).
POINTS = "sum(delta) FILTER (WHERE delta > 0 AND source NOT LIKE 'revert%')"
RECORD_EVENT = "INSERT INTO security_events (user_id, at_ms, kind, detail) VALUES (?, ?, ?, ?)"
AUDIT = "INSERT INTO audit (at_ms, admin, action, target, detail) VALUES (?, ?, ?, ?, ?)"
BAN = "INSERT INTO bans VALUES (?, ?, ?) ON CONFLICT (user_id) DO NOTHING RETURNING user_id"
TOTAL_OF = "SELECT user_id, total, seq, name FROM totals WHERE user_id = ?"
TO_REVERT = (
    "SELECT id, delta FROM ledger WHERE user_id = ? AND at_ms >= ? AND reverted_by IS NULL "
    "AND source NOT LIKE 'revert%' ORDER BY id"
)
APPLY_REVERT = (
    "UPDATE totals SET total = total + ?, seq = ?, reached_ms = ? WHERE user_id = ? "
    "RETURNING total, name"
)
LEDGER_OF = (
    "SELECT id, delta, at_ms, source FROM ledger WHERE user_id = ? ORDER BY id DESC LIMIT ?"
)
EVENTS_OF = (
    "SELECT at_ms, kind, detail FROM security_events WHERE user_id = ? ORDER BY id DESC LIMIT ?"
)
FORGET_TICKETS = """
DELETE FROM tickets WHERE id IN (SELECT id FROM tickets WHERE expires_ms < ? LIMIT ?)
"""
FORGET = """
DELETE FROM idempotency WHERE (user_id, key) IN
    (SELECT user_id, key FROM idempotency WHERE created_ms < ? LIMIT ?)
"""


IS_BANNED = "SELECT 1 FROM bans WHERE user_id = ?"

# Rank order read from the store itself (while Redis is away): banned users are off it.
_NOT_BANNED = "NOT EXISTS (SELECT 1 FROM bans WHERE bans.user_id = totals.user_id)"
TOP = (
    "SELECT user_id, total, coalesce(name, user_id) FROM totals "  # noqa: S608 (constants)
    f"WHERE {_NOT_BANNED} ORDER BY total DESC, seq LIMIT ?"
)
RANKED = (
    "SELECT total, seq, coalesce(name, user_id) FROM totals "  # noqa: S608 (constants)
    f"WHERE user_id = ? AND {_NOT_BANNED}"
)
# Users ahead of (total, seq), the given user excluded: rank - 1.
AHEAD = (
    "SELECT count(*) FROM totals WHERE (total > ? OR (total = ? AND seq < ?)) "  # noqa: S608
    f"AND user_id <> ? AND {_NOT_BANNED}"
)


def user_record(user_id: str, total: list[Any], banned: list[Any], ledger: list[Any],
                events: list[Any], flags: list[Any]) -> UserRecord:
    """The rows of TOTAL_OF, IS_BANNED, LEDGER_OF, EVENTS_OF and FLAGS_OF, as one record."""
    return UserRecord(
        total=UserTotal(*total[0]) if total else None,
        banned=bool(banned),
        ledger=[LedgerEntry(*row) for row in ledger],
        events=[SecurityEvent(user_id, *row) for row in events],
        flags=[row[0] for row in flags],
    )


def flags(rows: list[Any]) -> list[Flag]:
    """The rows of FLAGS (oldest first), one ``Flag`` per user."""
    found: dict[str, Flag] = {}
    for user_id, reason, since_ms in rows:
        flag = found.get(user_id)
        if flag is None:
            found[user_id] = Flag(user_id, [reason], since_ms)
        else:
            flag.reasons.append(reason)
    for flag in found.values():
        flag.reasons.sort()
    return list(found.values())


def top(rows: list[Any]) -> list[RankedUser]:
    """The rows of TOP, ranked."""
    return [RankedUser(i + 1, user_id, name, total) for i, (user_id, total, name) in
            enumerate(rows)]


def pyformat(statement: str) -> str:
    """A qmark statement for psycopg: ``?`` -> ``%s``, a literal ``%`` -> ``%%``."""
    return statement.replace("%", "%%").replace("?", "%s")
