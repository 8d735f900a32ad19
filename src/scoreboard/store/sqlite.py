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
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from scoreboard.errors import StatementFailed, StoreUnavailable, describe
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
from scoreboard.store import common, sql
from scoreboard.store.base import (
    BatchRead,
    BatchState,
    BatchWrite,
    Key,
    Slot,
    Standing,
    Transaction,
)
from scoreboard.store.migrations import migrations

# A list travels as one JSON parameter.
_BANNED_AMONG = "SELECT user_id FROM bans WHERE user_id IN (SELECT value FROM json_each(?))"
_TICKETS = (
    f"SELECT {sql.TICKET_COLUMNS} FROM tickets "  # noqa: S608 (constants)
    "WHERE id IN (SELECT value FROM json_each(?))"
)
_POINTS_SINCE = (
    f"SELECT user_id, {sql.POINTS} FROM ledger "  # noqa: S608 (constants)
    "WHERE user_id IN (SELECT value FROM json_each(?)) AND at_ms >= ? GROUP BY user_id"
)
# AUTOINCREMENT's counter: ids are handed out before the rows are written.
_RESERVE = "UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'ledger' RETURNING seq"
_FIRST_IDS = "INSERT INTO sqlite_sequence (name, seq) VALUES ('ledger', ?)"


def failure(exc: sqlite3.Error) -> StoreUnavailable:
    """A statement's error as the project's: a constraint refuses that update alone."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return StatementFailed(f"the database refused an update: {describe(exc)}",
                               "statement_failed")
    return StoreUnavailable()


def _insert_all(conn: sqlite3.Connection, statement: str, rows: list[Any]) -> None:
    """``rows`` in one transaction of ``conn`` (a worker thread's)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(statement, rows)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class _SQLiteTransaction:
    """Statements on the writer connection. There is one writer: nothing to lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    # -- common.Statements

    async def rows(self, statement: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self._conn.execute(statement, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise failure(exc) from exc

    async def run(self, statement: str, params: Sequence[Any]) -> None:
        await self.rows(statement, params)

    async def reserve(self, count: int) -> list[int]:
        if count <= 0:
            return []
        found = await self.rows(_RESERVE, (count,))
        if not found:  # no ledger row was ever written
            await self.run(_FIRST_IDS, (count,))
            return list(range(1, count + 1))
        last = int(found[0][0])
        return list(range(last - count + 1, last + 1))

    async def lock(self, name: str) -> None:
        return None

    def _many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self._conn.executemany(statement, rows)
        except sqlite3.Error as exc:
            raise failure(exc) from exc

    # -- the batch of writes

    async def read(self, request: BatchRead) -> BatchState:
        state = BatchState()
        for user_id, key in request.keys:
            await self.run(sql.CLAIM, (user_id, key, b"", request.now_ms))
            row = (await self.rows(sql.FIND_RESPONSE, (user_id, key)))[0]
            state.responses[(user_id, key)] = (
                None if row[1] == 0 else StoredResponse(row[0], row[1], row[2]))
        if request.users:
            found = await self.rows(_BANNED_AMONG, (json.dumps(list(request.users)),))
            state.banned = {row[0] for row in found}
        if request.tickets:
            for row in await self.rows(_TICKETS, (json.dumps(list(request.tickets)),)):
                state.tickets[row[0]] = Ticket(*row)
        if request.slots:
            state.boards = {board.id: board for board in await self._boards()}
        for board_id, user_id in request.slots:
            board = state.boards.get(board_id)
            if board is None:
                continue
            found = await self.rows(sql.ENTRY, (board_id, board.season, user_id))
            if found:
                state.entries[(board_id, user_id)] = sql.entry(board_id, board.season, found[0])
        state.ids = await self.reserve(request.ids)
        return state

    async def _boards(self) -> list[Board]:
        return [sql.board(row) for row in await self.rows(sql.BOARDS, ())]

    async def write(self, batch: BatchWrite) -> None:
        self._many(sql.ADD_LEDGER, [
            (r.id, r.board, r.season, r.user_id, r.kind, r.amount, r.at_ms, r.source)
            for r in batch.ledger])
        self._many(sql.SET_ENTRY, [
            (e.board, season, e.user_id, e.score, e.seq, at_ms)
            for e, season, at_ms in batch.entries])
        self._many(sql.SET_NAME, list(batch.names.items()))
        self._many(sql.REDEEM_TICKET, [(at_ms, ticket_id) for ticket_id, at_ms in batch.redeemed])
        self._many(sql.RELEASE, batch.released)

    async def remember(self, responses: Sequence[tuple[Key, StoredResponse]]) -> None:
        self._many(sql.REMEMBER, [(r.fingerprint, r.status, r.body, user_id, key)
                                  for (user_id, key), r in responses])

    # -- the rest

    async def issue_ticket(self, ticket: Ticket, now_ms: int) -> None:
        await self.run(sql.ISSUE_TICKET, (ticket.id, ticket.user_id, ticket.kind, ticket.points,
                                          now_ms, ticket.not_before_ms, ticket.expires_ms,
                                          ticket.board))

    async def record_events(self, events: Sequence[SecurityEvent]) -> None:
        self._many(sql.RECORD_EVENT, [(e.user_id, e.at_ms, e.kind, e.detail) for e in events])

    async def flag(self, user_id: str, reason: str, now_ms: int) -> bool:
        return bool(await self.rows(sql.FLAG, (user_id, reason, now_ms)))

    async def audit(self, admin: str, action: str, target: str, detail: str,
                    now_ms: int) -> int:
        try:
            audit_id = self._conn.execute(sql.AUDIT, (now_ms, admin, action, target,
                                                      detail)).lastrowid
        except sqlite3.Error as exc:
            raise failure(exc) from exc
        assert audit_id is not None  # an INSERT into a rowid table always has one
        return audit_id

    async def ban(self, user_id: str, by: str, now_ms: int) -> bool:
        return await common.ban(self, user_id, by, now_ms)

    async def unban(self, user_id: str, now_ms: int) -> list[Entry]:
        return await common.unban(self, user_id, now_ms)

    async def revert(self, user_id: str, boards: Sequence[Board], since_ms: int,
                     source: str, now_ms: int) -> tuple[list[Entry], list[Slot], int]:
        return await common.revert(self, user_id, boards, since_ms, source, now_ms)

    async def create_board(self, spec: BoardSpec, now_ms: int, max_boards: int) -> Board | str:
        return await common.create_board(self, spec, now_ms, max_boards)

    async def retitle_board(self, board_id: str, title: str) -> None:
        await self.run(sql.RETITLE_BOARD, (title, board_id))

    async def board_to_change(self, board_id: str) -> Board | None:
        found = await self.rows(sql.BOARD, (board_id,))
        return sql.board(found[0]) if found else None

    async def reset_season(self, board: Board, ended_ms: int) -> Board | None:
        return await common.reset_season(self, board, ended_ms)

    async def mark_stored(self, board_id: str, season: int, now_ms: int) -> None:
        await self.run(sql.MARK_STORED, (now_ms, board_id, season))

    async def delete_board(self, board_id: str, now_ms: int) -> None:
        await self.run(sql.DELETE_BOARD, (now_ms, board_id))

    async def rank_of(self, board: Board, entry: Entry) -> int:
        params = (board.id, board.season, entry.score, entry.score, entry.seq, entry.user_id)
        return int((await self.rows(sql.rank(board), params))[0][0]) + 1

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
        self._standings_writer: sqlite3.Connection | None = None  # final standings, in a thread

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
        for conn in (self._writer, self._reader, self._standings_writer):
            if conn is not None:
                conn.close()
        self._writer = self._reader = self._standings_writer = None

    async def ping(self) -> None:
        self._reads("SELECT 1 FROM boards LIMIT 1", ())

    async def secret(self, name: str) -> bytes:
        found = self._reads(sql.META_VALUE, (name,))
        if not found:
            async with self.transaction() as tx:
                await tx.run(sql.MAKE_META, (name, secrets.token_hex(32)))  # type: ignore[attr-defined]
            found = self._reads(sql.META_VALUE, (name,))
        return bytes.fromhex(found[0][0])

    async def find_response(self, user_id: str, key: str) -> StoredResponse | None:
        rows = self._reads(sql.FIND_RESPONSE, (user_id, key))
        if not rows or rows[0][1] == 0:  # a claim still open is not an answer yet
            return None
        return StoredResponse(*rows[0])

    async def boards(self) -> list[Board]:
        return [sql.board(row) for row in self._reads(sql.BOARDS, ())]

    async def entries(self, board: Board) -> Iterator[Entry]:
        """Read as they are taken: a million rows are never held at once (the ranking
        keeps what it needs of each), which keeps the process's peak memory down."""
        try:
            conn = self._read()
            names = dict(conn.execute(sql.NAMES).fetchall())
            banned = {row[0] for row in conn.execute(sql.BANNED)}
            rows = conn.execute(sql.ENTRIES, (board.id, board.season))
        except sqlite3.Error as exc:
            raise StoreUnavailable() from exc
        return _translated(sql.entries(board, rows, names, banned))

    async def top(self, board: Board, limit: int, after: Entry | None = None,
                  offset: int = 0) -> list[RankedUser]:
        return sql.ranked(self._page(board, limit, after, offset), offset + 1)

    def _page(self, board: Board, limit: int, after: Entry | None, offset: int) -> list[Any]:
        if after is None:
            return self._reads(sql.top(board, False), (board.id, board.season, limit, offset))
        return self._reads(sql.top(board, True), (board.id, board.season, after.score,
                                                 after.score, after.seq, limit, offset))

    async def ranked(self, board: Board, user_id: str) -> RankedUser | None:
        found = self._reads(sql.ENTRY, (board.id, board.season, user_id))
        if not found or self._reads(sql.IS_BANNED, (user_id,)):
            return None
        entry = sql.entry(board.id, board.season, found[0])
        ((ahead,),) = self._reads(sql.rank(board), (board.id, board.season, entry.score,
                                                    entry.score, entry.seq, user_id))
        return RankedUser(ahead + 1, user_id, entry.name or user_id, entry.score)

    async def count(self, board: Board) -> int:
        return int(self._reads(sql.COUNT, (board.id, board.season))[0][0])

    async def ahead(self, board: Board, score: int, seq: int) -> int:
        params = (board.id, board.season, score, score, seq)
        return int(self._reads(sql.ahead_of(board), params)[0][0])

    async def banned(self) -> set[str]:
        return {row[0] for row in self._reads("SELECT user_id FROM bans", ())}

    async def seasons(self, board_id: str) -> list[Season]:
        return [sql.season(row) for row in self._reads(sql.SEASONS_OF, (board_id,))]

    async def season(self, board_id: str, season: int) -> Season | None:
        found = self._reads(sql.SEASON_OF, (board_id, season))
        return sql.season(found[0]) if found else None

    async def unstored(self) -> list[Season]:
        return [sql.season(row) for row in self._reads(sql.UNSTORED, ())]

    async def final_standings(self, board: Board, season: Season,
                              chunk: int) -> AsyncIterator[list[Standing]]:
        """On a connection of its own, in a worker thread: a million entries are sorted
        and read without holding the event loop (or the writer) for it."""
        conn = await asyncio.to_thread(_connect, self.path, 200)
        try:
            params = (board.id, season.season, season.ended_ms, season.ended_ms)
            cursor = await asyncio.to_thread(conn.execute, sql.final(board), params)
            while rows := await asyncio.to_thread(cursor.fetchmany, chunk):
                yield rows
        except sqlite3.Error as exc:
            raise StoreUnavailable() from exc
        finally:
            conn.close()

    async def add_standings(self, board_id: str, season: int, first_rank: int,
                            rows: Sequence[Standing]) -> None:
        """On a connection of its own, in a worker thread: inserting (two indexes) takes
        ~12 us a row, time the loop keeps. It queues for the writer's turn like a
        transaction does (FIFO), so the group commit waits for one chunk at most instead
        of retrying against a file that the next chunk has already locked again."""
        if not rows:
            return
        if self._standings_writer is None:
            conn = await asyncio.to_thread(_connect, self.path, int(self._lock_timeout * 1000))
            # No fsync per chunk: the season is marked stored by the writer's connection
            # (synchronous=FULL), whose fsync of the WAL covers every frame before it. A
            # crash before that mark stores the season again at the next start.
            conn.execute("PRAGMA synchronous = NORMAL")
            self._standings_writer = conn
        params = [(board_id, season, first_rank + i, *row) for i, row in enumerate(rows)]
        async with self._writing:
            try:
                await asyncio.shield(asyncio.to_thread(
                    _insert_all, self._standings_writer, sql.ADD_STANDING, params))
            except sqlite3.Error as exc:
                raise failure(exc) from exc

    async def standings(self, board_id: str, season: int, limit: int,
                        after_rank: int = 0) -> list[RankedUser]:
        return sql.standings(self._reads(sql.STANDINGS, (board_id, season, after_rank, limit)))

    async def standing(self, board_id: str, season: int, user_id: str) -> RankedUser | None:
        found = sql.standings(self._reads(sql.STANDING, (board_id, season, user_id)))
        return found[0] if found else None

    async def user_record(self, user_id: str, limit: int) -> UserRecord:
        return sql.user_record(
            user_id,
            self._reads(sql.NAME_OF, (user_id,)),
            self._reads(sql.ENTRIES_OF, (user_id,)),
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


def _translated(rows: Iterator[Entry]) -> Iterator[Entry]:
    try:
        yield from rows
    except sqlite3.Error as exc:
        raise StoreUnavailable() from exc


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
