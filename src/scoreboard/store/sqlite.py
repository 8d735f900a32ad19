"""SQLiteStore: the embedded store, one file in the data directory.

WAL with ``synchronous=FULL``: a commit returns only after its WAL frames are
fsynced. One writer connection does all writes. Statements run on the event loop
(they touch pages in memory and take microseconds); the COMMIT — the fsync — runs in
a worker thread so the loop keeps serving while the disk works. The writer never
waits on SQLite's lock inside SQLite: a busy database is retried from the loop until
a deadline, then reported as ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from scoreboard.errors import StatementFailed, StoreUnavailable, describe
from scoreboard.model import (
    Flag,
    RankedUser,
    SecurityEvent,
    StoredResponse,
    Ticket,
    UserRecord,
    UserTotal,
)
from scoreboard.store import sql
from scoreboard.store.base import Transaction
from scoreboard.store.migrations import migrations

# A list of ids travels as one JSON parameter.
_BANNED_AMONG = "SELECT user_id FROM bans WHERE user_id IN (SELECT value FROM json_each(?))"
_POINTS_SINCE = (
    f"SELECT user_id, {sql.POINTS} FROM ledger "  # noqa: S608 (constants)
    "WHERE user_id IN (SELECT value FROM json_each(?)) AND at_ms >= ? GROUP BY user_id"
)


def failure(exc: sqlite3.Error) -> StoreUnavailable:
    """A statement's error as the project's: a constraint refuses that update alone."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return StatementFailed(f"the database refused an update: {describe(exc)}",
                               "statement_failed")
    return StoreUnavailable()


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class _SQLiteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        try:
            return self._conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise failure(exc) from exc

    async def claim(self, user_id: str, key: str, now_ms: int) -> StoredResponse | None:
        if self._one(sql.CLAIM, (user_id, key, b"", now_ms)) is not None:
            return None
        row = self._one(sql.FIND_RESPONSE, (user_id, key))
        return StoredResponse(row[0], row[1], row[2])

    async def add(self, user_id: str, delta: int, name: str | None, source: str,
                  now_ms: int) -> UserTotal | None:
        try:
            seq = self._conn.execute(sql.ADD_LEDGER, (user_id, delta, now_ms, source)).lastrowid
        except sqlite3.Error as exc:
            raise failure(exc) from exc
        assert seq is not None  # an INSERT into a rowid table always has one
        row = self._one(sql.ADD_TOTAL, (user_id, delta, seq, now_ms, name))
        if row is None:  # would pass the cap: take the ledger entry back
            self._one("DELETE FROM ledger WHERE id = ?", (seq,))
            return None
        return UserTotal(user_id, row[0], seq, row[1])

    async def remember(self, user_id: str, key: str, response: StoredResponse) -> None:
        self._one(sql.REMEMBER, (response.fingerprint, response.status, response.body,
                                 user_id, key))

    async def release(self, user_id: str, key: str) -> None:
        self._one(sql.RELEASE, (user_id, key))

    async def issue_ticket(self, ticket: Ticket, now_ms: int) -> None:
        self._one(sql.ISSUE_TICKET, (ticket.id, ticket.user_id, ticket.kind, ticket.points, now_ms,
                                  ticket.not_before_ms, ticket.expires_ms))

    async def find_ticket(self, ticket_id: str) -> Ticket | None:
        row = self._one(sql.FIND_TICKET, (ticket_id,))
        return Ticket(*row) if row else None

    async def redeem_ticket(self, ticket_id: str, now_ms: int) -> bool:
        return self._one(sql.REDEEM_TICKET, (now_ms, ticket_id)) is not None

    async def unredeem_ticket(self, ticket_id: str) -> None:
        self._one(sql.UNREDEEM_TICKET, (ticket_id,))

    async def banned_among(self, user_ids: Sequence[str]) -> set[str]:
        try:
            rows = self._conn.execute(_BANNED_AMONG, (json.dumps(list(user_ids)),)).fetchall()
        except sqlite3.Error as exc:
            raise failure(exc) from exc
        return {row[0] for row in rows}

    async def flag(self, user_id: str, reason: str, now_ms: int) -> bool:
        return self._one(sql.FLAG, (user_id, reason, now_ms)) is not None

    async def record_events(self, events: Sequence[SecurityEvent]) -> None:
        try:
            self._conn.executemany(sql.RECORD_EVENT, [(e.user_id, e.at_ms, e.kind, e.detail)
                                                   for e in events])
        except sqlite3.Error as exc:
            raise failure(exc) from exc

    async def audit(self, admin: str, action: str, target: str, detail: str,
                    now_ms: int) -> int:
        try:
            row = (now_ms, admin, action, target, detail)
            audit_id = self._conn.execute(sql.AUDIT, row).lastrowid
        except sqlite3.Error as exc:
            raise failure(exc) from exc
        assert audit_id is not None  # an INSERT into a rowid table always has one
        return audit_id

    async def ban(self, user_id: str, by: str, now_ms: int) -> bool:
        return self._one(sql.BAN, (user_id, now_ms, by)) is not None

    async def unban(self, user_id: str) -> UserTotal | None:
        self._one("DELETE FROM bans WHERE user_id = ?", (user_id,))
        row = self._one(sql.TOTAL_OF, (user_id,))
        return UserTotal(*row) if row else None

    async def revert(self, user_id: str, since_ms: int, source: str,
                     now_ms: int) -> tuple[UserTotal | None, int]:
        undo = self._conn.execute(sql.TO_REVERT, (user_id, since_ms)).fetchall()
        delta = -sum(d for _, d in undo)
        if not undo or delta == 0:
            row = self._one(sql.TOTAL_OF, (user_id,))
            return (UserTotal(*row) if row else None), 0
        try:
            seq = self._conn.execute(sql.ADD_LEDGER, (user_id, delta, now_ms, source)).lastrowid
            self._conn.executemany("UPDATE ledger SET reverted_by = ? WHERE id = ?",
                                   [(seq, entry_id) for entry_id, _ in undo])
        except sqlite3.Error as exc:
            raise failure(exc) from exc
        assert seq is not None  # an INSERT into a rowid table always has one
        row = self._one(sql.APPLY_REVERT, (delta, seq, now_ms, user_id))
        return UserTotal(user_id, row[0], seq, row[1]), len(undo)

    async def rank_of(self, total: UserTotal) -> int:
        params = (total.total, total.total, total.seq, total.user_id)
        return int(self._one(sql.AHEAD, params)[0]) + 1

    async def forget_tickets(self, before_ms: int, limit: int) -> int:
        try:
            return self._conn.execute(sql.FORGET_TICKETS, (before_ms, limit)).rowcount
        except sqlite3.Error as exc:
            raise failure(exc) from exc

    async def forget_responses(self, before_ms: int, limit: int) -> int:
        try:
            return self._conn.execute(sql.FORGET, (before_ms, limit)).rowcount
        except sqlite3.Error as exc:
            raise failure(exc) from exc


class SQLiteStore:
    """The embedded Store. Serves a single process: the file is not shared by instances."""

    def __init__(self, path: Path, lock_timeout: float = 2.0) -> None:
        self.path = path
        self._lock_timeout = lock_timeout
        self._writer: sqlite3.Connection | None = None
        self._writing = asyncio.Lock()  # one transaction at a time on the writer
        self._reader: sqlite3.Connection | None = None

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = _connect(self.path, busy_timeout_ms=0)
            self._reader = _connect(self.path, busy_timeout_ms=200)
            await asyncio.to_thread(migrate, self._writer, self._lock_timeout)
        except StoreUnavailable:
            await self.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise StoreUnavailable(
                f"cannot open the database at {self.path}: {describe(exc)}") from exc

    async def close(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None

    async def ping(self) -> None:
        try:
            self._read().execute("SELECT 1 FROM totals LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable() from exc

    async def find_response(self, user_id: str, key: str) -> StoredResponse | None:
        try:
            row = self._read().execute(sql.FIND_RESPONSE, (user_id, key)).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable() from exc
        return StoredResponse(row[0], row[1], row[2]) if row else None

    async def totals(self) -> list[UserTotal]:
        def load() -> list[UserTotal]:
            rows = self._read().execute(
                "SELECT user_id, total, seq, name FROM totals "
                "WHERE user_id NOT IN (SELECT user_id FROM bans)"
            )
            return [UserTotal(*row) for row in rows]

        try:
            return await asyncio.to_thread(load)
        except sqlite3.Error as exc:
            raise StoreUnavailable() from exc

    async def top(self, limit: int) -> list[RankedUser]:
        return sql.top(self._reads(sql.TOP, (limit,)))

    async def ranked(self, user_id: str) -> RankedUser | None:
        found = self._reads(sql.RANKED, (user_id,))
        if not found:
            return None
        total, seq, name = found[0]
        ((ahead,),) = self._reads(sql.AHEAD, (total, total, seq, user_id))
        return RankedUser(ahead + 1, user_id, name, total)

    async def banned(self) -> set[str]:
        return {row[0] for row in self._reads("SELECT user_id FROM bans", ())}

    async def user_record(self, user_id: str, limit: int) -> UserRecord:
        return sql.user_record(
            user_id,
            self._reads(sql.TOTAL_OF, (user_id,)),
            self._reads(sql.IS_BANNED, (user_id,)),
            self._reads(sql.LEDGER_OF, (user_id, limit)),
            self._reads(sql.EVENTS_OF, (user_id, limit)),
            self._reads(sql.FLAGS_OF, (user_id,)),
        )

    async def flags(self) -> list[Flag]:
        return sql.flags(self._reads(sql.FLAGS, ()))

    async def points_since(self, user_ids: Sequence[str], since_ms: int) -> dict[str, int]:
        rows = self._reads(_POINTS_SINCE, (json.dumps(list(user_ids)), since_ms))
        return {user_id: points for user_id, points in rows if points}

    def _reads(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        try:
            return self._read().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable() from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._writing:
            conn = self._writer
            if conn is None:
                raise StoreUnavailable("the store is closed")
            await self._begin(conn)
            try:
                yield _SQLiteTransaction(conn)
            except BaseException:
                _rollback(conn)
                raise
            try:
                # shield: a cancelled caller must not leave the COMMIT half-watched.
                await asyncio.shield(asyncio.to_thread(conn.execute, "COMMIT"))
            except sqlite3.Error as exc:
                _rollback(conn)
                raise StoreUnavailable() from exc

    async def _begin(self, conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + self._lock_timeout
        pause = 0.002
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() >= deadline:
                    raise StoreUnavailable("the database is locked or unavailable") from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreUnavailable("the store is closed")
        return self._reader


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        # If even this fails the connection is gone; nothing was committed either way.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def migrate(conn: sqlite3.Connection, lock_timeout: float = 2.0) -> int:
    """Bring the schema to the newest version; return it."""
    conn.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
    try:
        steps = migrations("sqlite")
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        if current > len(steps):
            raise StoreUnavailable(
                f"the database is at schema version {current}, newer than this "
                f"scoreboard knows ({len(steps)})"
            )
        for step in steps[current:]:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{step.sql}\nPRAGMA user_version = {step.version};\nCOMMIT;"
            )
        return len(steps)
    except sqlite3.Error:
        _rollback(conn)
        raise
    finally:
        conn.execute("PRAGMA busy_timeout = 0")
