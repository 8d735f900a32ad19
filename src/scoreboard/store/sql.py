"""The statements both stores run, in qmark style (``?``); PostgreSQL converts them.

What the dialects write differently (lists of ids, sequences, set-based writes) lives
in each store's own module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from scoreboard.model import (
    Board,
    BoardSpec,
    Entry,
    Flag,
    LedgerEntry,
    RankedUser,
    Season,
    SecurityEvent,
    UserRecord,
)

FIND_RESPONSE = "SELECT fingerprint, status, body FROM idempotency WHERE user_id = ? AND key = ?"
# A key is taken by inserting its row at the start of the update: a second transaction
# with the same key waits for the first (the primary key) and then finds its answer,
# instead of failing its whole batch at commit. The answer fills the row at the end.
CLAIM = (
    "INSERT INTO idempotency (user_id, key, fingerprint, status, body, created_ms) "
    "VALUES (?, ?, '', 0, ?, ?) ON CONFLICT (user_id, key) DO NOTHING"
)
REMEMBER = (
    "UPDATE idempotency SET fingerprint = ?, status = ?, body = ? WHERE user_id = ? AND key = ?"
)
RELEASE = "DELETE FROM idempotency WHERE user_id = ? AND key = ?"
ADD_LEDGER = (
    "INSERT INTO ledger (id, board, season, user_id, kind, amount, at_ms, source) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SET_ENTRY = """
INSERT INTO entries (board, season, user_id, score, seq, reached_ms) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (board, season, user_id) DO UPDATE SET
    score = excluded.score, seq = excluded.seq, reached_ms = excluded.reached_ms
"""
SET_NAME = (
    "INSERT INTO users (user_id, name) VALUES (?, ?) "
    "ON CONFLICT (user_id) DO UPDATE SET name = excluded.name"
)
ISSUE_TICKET = (
    "INSERT INTO tickets (id, user_id, kind, points, created_ms, not_before_ms, expires_ms, "
    "board) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
TICKET_COLUMNS = "id, user_id, kind, points, not_before_ms, expires_ms, redeemed_ms, board"
REDEEM_TICKET = "UPDATE tickets SET redeemed_ms = ? WHERE id = ?"
FLAG = (
    "INSERT INTO flags (user_id, reason, since_ms) VALUES (?, ?, ?) "
    "ON CONFLICT (user_id, reason) DO NOTHING RETURNING 1"
)
FLAGS = "SELECT user_id, reason, since_ms FROM flags ORDER BY since_ms, user_id, reason"
FLAGS_OF = "SELECT reason FROM flags WHERE user_id = ? ORDER BY reason"
# Points a user was given: increments and tickets (kind 'add'), not reverts or scores.
POINTS = "sum(amount) FILTER (WHERE kind = 'add')"
RECORD_EVENT = "INSERT INTO security_events (user_id, at_ms, kind, detail) VALUES (?, ?, ?, ?)"
AUDIT = "INSERT INTO audit (at_ms, admin, action, target, detail) VALUES (?, ?, ?, ?, ?)"
BAN = "INSERT INTO bans VALUES (?, ?, ?) ON CONFLICT (user_id) DO NOTHING RETURNING user_id"
UNBAN = "DELETE FROM bans WHERE user_id = ? RETURNING user_id"
BANNED_FROM = "INSERT INTO ban_history (user_id, banned_ms) VALUES (?, ?)"
BAN_LIFTED = "UPDATE ban_history SET lifted_ms = ? WHERE user_id = ? AND lifted_ms IS NULL"
IS_BANNED = "SELECT 1 FROM bans WHERE user_id = ?"
NAME_OF = "SELECT name FROM users WHERE user_id = ?"

BOARD_COLUMNS = "id, title, sort, operator, reset, timezone, season, season_started_ms"
BOARDS = f"SELECT {BOARD_COLUMNS} FROM boards WHERE deleted_ms IS NULL ORDER BY id"  # noqa: S608
BOARD_STATE = "SELECT deleted_ms FROM boards WHERE id = ?"
BOARD = f"SELECT {BOARD_COLUMNS} FROM boards WHERE id = ? AND deleted_ms IS NULL"  # noqa: S608
LIVE_BOARDS = "SELECT count(*) FROM boards WHERE deleted_ms IS NULL"
CREATE_BOARD = (
    f"INSERT INTO boards ({BOARD_COLUMNS}, created_ms) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)"  # noqa: S608
)
# A reset: the board moves on only from the season expected (so it happens once), the
# season's row closes and the next one's is made (its key is unique).
ADVANCE_SEASON = (
    "UPDATE boards SET season = season + 1, season_started_ms = ? "
    "WHERE id = ? AND season = ? AND deleted_ms IS NULL RETURNING season"
)
CLOSE_SEASON = "UPDATE seasons SET ended_ms = ? WHERE board = ? AND season = ?"
OPEN_SEASON = "INSERT INTO seasons (board, season, started_ms) VALUES (?, ?, ?)"
SEASON_COLUMNS = "board, season, started_ms, ended_ms, stored_ms"
SEASONS_OF = f"SELECT {SEASON_COLUMNS} FROM seasons WHERE board = ? ORDER BY season DESC"  # noqa: S608
SEASON_OF = f"SELECT {SEASON_COLUMNS} FROM seasons WHERE board = ? AND season = ?"  # noqa: S608
UNSTORED = (  # closed seasons of live boards whose standings are not stored yet
    f"SELECT {SEASON_COLUMNS} FROM seasons WHERE ended_ms IS NOT NULL AND stored_ms IS NULL "  # noqa: S608
    "AND board IN (SELECT id FROM boards WHERE deleted_ms IS NULL) ORDER BY board, season"
)
ADD_STANDING = (
    "INSERT INTO standings (board, season, rank, user_id, score, name) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (board, season, rank) DO NOTHING"
)
MARK_STORED = (
    "UPDATE seasons SET stored_ms = ? WHERE board = ? AND season = ? AND stored_ms IS NULL"
)
STANDINGS = (
    "SELECT rank, user_id, name, score FROM standings WHERE board = ? AND season = ? "
    "AND rank > ? ORDER BY rank LIMIT ?"
)
STANDING = (
    "SELECT rank, user_id, name, score FROM standings WHERE board = ? AND season = ? "
    "AND user_id = ?"
)
RETITLE_BOARD = "UPDATE boards SET title = ? WHERE id = ? AND deleted_ms IS NULL"
DELETE_BOARD = "UPDATE boards SET deleted_ms = ? WHERE id = ? AND deleted_ms IS NULL"

# Entries with the user's name, on a board's current season, banned users left out.
_NOT_BANNED = "NOT EXISTS (SELECT 1 FROM bans WHERE bans.user_id = e.user_id)"
# True of every entry (a CHECK says so), and said by every query that reads in rank
# order: PostgreSQL's rank-order indexes are partial on it, so only those queries can
# take them. A look-up by key, which does not say it, can only take the primary key
# (without statistics the planner took a rank-order index for it and read the board's
# every entry per user).
_IN_ORDER = "e.score >= 0"
_ENTRY = "e.user_id, e.score, e.seq, u.name"
_FROM = "FROM entries e LEFT JOIN users u ON u.user_id = e.user_id"
# A whole board (a rebuild): the entries alone, then the names and bans apart — a join
# per row costs more than the two small lookups.
ENTRIES = "SELECT user_id, score, seq FROM entries WHERE board = ? AND season = ?"
NAMES = "SELECT user_id, name FROM users WHERE name IS NOT NULL"
BANNED = "SELECT user_id FROM bans"
ENTRIES_OF = (  # a user's entries on every live board's current season
    f"SELECT e.board, e.season, {_ENTRY} {_FROM} JOIN boards b ON b.id = e.board "
    "AND b.season = e.season AND b.deleted_ms IS NULL WHERE e.user_id = ? ORDER BY e.board"
)
COUNT = f"SELECT count(*) FROM entries e WHERE e.board = ? AND e.season = ? AND {_NOT_BANNED}"  # noqa: S608
ENTRY = f"SELECT {_ENTRY} {_FROM} WHERE e.board = ? AND e.season = ? AND e.user_id = ?"


def order(board: Board) -> str:
    """The ORDER BY of the board's rank order."""
    return "e.score DESC, e.seq" if board.spec.sort == "desc" else "e.score, e.seq"


def ahead(board: Board) -> str:
    """Entries ranked ahead of (score, score, seq): the parameters are ?, ?, ?."""
    better = ">" if board.spec.sort == "desc" else "<"
    return f"(e.score {better} ? OR (e.score = ? AND e.seq < ?))"


def behind(board: Board) -> str:
    """Entries ranked behind (score, score, seq)."""
    worse = "<" if board.spec.sort == "desc" else ">"
    return f"(e.score {worse} ? OR (e.score = ? AND e.seq > ?))"


def top(board: Board, after: bool) -> str:
    """A page of the board in rank order: board, season, [score, score, seq,] limit, offset."""
    where = f"e.board = ? AND e.season = ? AND {_IN_ORDER} AND {_NOT_BANNED}"
    if after:
        where += f" AND {behind(board)}"
    return f"SELECT {_ENTRY} {_FROM} WHERE {where} ORDER BY {order(board)} LIMIT ? OFFSET ?"


def final(board: Board) -> str:
    """A closed season's entries in rank order, without those banned when it ended:
    board, season, ended, ended."""
    return (f"SELECT e.user_id, e.score, u.name {_FROM} WHERE e.board = ? AND e.season = ? "  # noqa: S608
            f"AND {_IN_ORDER} AND NOT EXISTS (SELECT 1 FROM ban_history h "
            "WHERE h.user_id = e.user_id AND h.banned_ms <= ? "
            "AND (h.lifted_ms IS NULL OR h.lifted_ms > ?)) "
            f"ORDER BY {order(board)}")


def rank(board: Board) -> str:
    """Entries ahead of a user's: board, season, score, score, seq, user."""
    return (f"SELECT count(*) FROM entries e WHERE e.board = ? AND e.season = ? "  # noqa: S608
            f"AND {_IN_ORDER} AND {ahead(board)} AND e.user_id <> ? AND {_NOT_BANNED}")


def ahead_of(board: Board) -> str:
    """Entries ahead of a place in the order: board, season, score, score, seq."""
    return (f"SELECT count(*) FROM entries e WHERE e.board = ? AND e.season = ? "  # noqa: S608
            f"AND {_IN_ORDER} AND {ahead(board)} AND {_NOT_BANNED}")


TO_REVERT = (
    "SELECT id, kind, amount FROM ledger WHERE user_id = ? AND board = ? AND season = ? "
    "AND at_ms >= ? AND reverted_by IS NULL AND kind <> 'revert' ORDER BY id"
)
# The submissions left once a revert undid some: what a best or set board's entry becomes.
REMAINING = (
    "SELECT id, amount, at_ms FROM ledger WHERE user_id = ? AND board = ? AND season = ? "
    "AND kind = 'submit' AND reverted_by IS NULL ORDER BY id"
)
MARK_REVERTED = "UPDATE ledger SET reverted_by = ? WHERE id = ?"
DROP_ENTRY = "DELETE FROM entries WHERE board = ? AND season = ? AND user_id = ?"
LEDGER_OF = (
    "SELECT id, board, season, kind, amount, at_ms, source FROM ledger WHERE user_id = ? "
    "ORDER BY id DESC LIMIT ?"
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
META_VALUE = "SELECT value FROM meta WHERE name = ?"
MAKE_META = "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"


def board(row: Any) -> Board:
    """A row of BOARDS."""
    board_id, title, sort, operator, reset, timezone, season, started_ms = row
    return Board(BoardSpec(board_id, title, sort, operator, reset, timezone), season,
                 started_ms)


def season(row: Any) -> Season:
    """A row of SEASON_COLUMNS."""
    return Season(*row)


def entries(board: Board, rows: Iterable[Any], names: dict[str, str],
            banned: set[str]) -> Iterator[Entry]:
    """The rows of ENTRIES, with names, banned users left out, as they are read."""
    named, board_id, season_no = names.get, board.id, board.season
    return (Entry(board_id, season_no, user_id, score, seq, named(user_id))
            for user_id, score, seq in rows if user_id not in banned)


def entry(board_id: str, season_no: int, row: Any) -> Entry:
    """A row of ``_ENTRY``'s columns."""
    user_id, score, seq, name = row
    return Entry(board_id, season_no, user_id, score, seq, name)


def standings(rows: list[Any]) -> list[RankedUser]:
    """Rows of STANDINGS."""
    return [RankedUser(rank, user_id, name or user_id, score)
            for rank, user_id, name, score in rows]


def ranked(rows: list[Any], first_rank: int) -> list[RankedUser]:
    """Rows of ``_ENTRY``'s columns in rank order, the first at ``first_rank``."""
    return [RankedUser(first_rank + i, user_id, name or user_id, score, seq)
            for i, (user_id, score, seq, name) in enumerate(rows)]


def user_record(user_id: str, name: list[Any], entries: list[Any], banned: list[Any],
                ledger: list[Any], events: list[Any], flags: list[Any]) -> UserRecord:
    """The rows of NAME_OF, ENTRIES_OF, IS_BANNED, LEDGER_OF, EVENTS_OF and FLAGS_OF."""
    return UserRecord(
        name=name[0][0] if name else None,
        entries=[entry(row[0], row[1], row[2:]) for row in entries],
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


def pyformat(statement: str) -> str:
    """A qmark statement for psycopg: ``?`` -> ``%s``, a literal ``%`` -> ``%%``."""
    return statement.replace("%", "%%").replace("?", "%s")
