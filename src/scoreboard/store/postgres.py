"""PostgresStore: one PostgreSQL database for every instance (psycopg 3, a connection pool).

The same statements as the SQLite store (``store/sql.py``), converted to psycopg's
placeholders; a commit is durable when PostgreSQL says so (``synchronous_commit`` on,
its default). The schema is created or upgraded at open, under an advisory lock so
that instances starting together migrate once.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import psycopg
import psycopg_pool

from scoreboard.coalesce import Coalescer
from scoreboard.errors import (
    StatementFailed,
    StoreUnavailable,
    TransactionConflict,
    describe,
)
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

_OPEN = (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)
_MIGRATION_LOCK = 7_303_240_117  # any constant: the advisory lock all instances agree on

# The batch of writes, set-based: one statement per kind of row, whatever the batch holds.
_CLAIMS = """
INSERT INTO idempotency (user_id, key, fingerprint, status, body, created_ms)
SELECT u, k, '', 0, ''::bytea, %s FROM unnest(%s::text[], %s::text[]) AS t(u, k)
ORDER BY u, k ON CONFLICT (user_id, key) DO NOTHING
"""
_RESPONSES = """
SELECT user_id, key, fingerprint, status, body FROM idempotency
WHERE (user_id, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""
_LOCK = "SELECT pg_advisory_xact_lock(%s)"
# A batch's users, one statement for them all: the subquery (kept a subquery by OFFSET
# 0) hands the ids on in the order given, so every instance takes them in one order.
_LOCK_ALL = """
SELECT count(pg_advisory_xact_lock(l)) FROM (
    SELECT l FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(l, n) ORDER BY n OFFSET 0) s
"""
_BANNED_AMONG = "SELECT user_id FROM bans WHERE user_id = ANY(%s)"
# FOR SHARE: a season reset (which updates the row) and this batch never overlap, so a
# write belongs to the season current when it commits.
_BOARDS_OF = (
    f"SELECT {sql.BOARD_COLUMNS} FROM boards "  # noqa: S608 (constants)
    "WHERE id = ANY(%s) AND deleted_ms IS NULL FOR SHARE"
)
_TICKETS = f"SELECT {sql.TICKET_COLUMNS} FROM tickets WHERE id = ANY(%s) FOR UPDATE"  # noqa: S608
# Each (board, user) looked up on the whole primary key, the board's current season
# included, and its name by the users' key: written as joins, the planner left the
# season out of the index condition (every entry of the board scanned per user: 416 ms
# for 150 users on a board of 200,000), and with stale statistics on a table that had
# just filled, scanned all of users per row (200 ms a batch); this is ~1 ms either way.
_ENTRIES_OF = """
SELECT e.board, e.season, e.user_id, e.score, e.seq,
       (SELECT u.name FROM users u WHERE u.user_id = e.user_id)
FROM unnest(%s::text[], %s::text[]) AS t(board, user_id)
JOIN boards b ON b.id = t.board
JOIN LATERAL (SELECT * FROM entries x WHERE x.board = t.board AND x.season = b.season
              AND x.user_id = t.user_id OFFSET 0) e ON true
"""
_IDS = "SELECT nextval('ledger_id_seq') FROM generate_series(1, %s)"
_ADD_LEDGER = """
INSERT INTO ledger (id, board, season, user_id, kind, amount, at_ms, source)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::text[], %s::text[],
                     %s::bigint[], %s::bigint[], %s::text[])
"""
_SET_ENTRIES = """
INSERT INTO entries (board, season, user_id, score, seq, reached_ms)
SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::bigint[], %s::bigint[],
                     %s::bigint[])
ON CONFLICT (board, season, user_id) DO UPDATE SET
    score = excluded.score, seq = excluded.seq, reached_ms = excluded.reached_ms
"""
_SET_NAMES = """
INSERT INTO users (user_id, name) SELECT * FROM unnest(%s::text[], %s::text[])
ON CONFLICT (user_id) DO UPDATE SET name = excluded.name
"""
_REDEEM = """
UPDATE tickets t SET redeemed_ms = v.at FROM unnest(%s::text[], %s::bigint[]) AS v(id, at)
WHERE t.id = v.id
"""
_RELEASE = """
DELETE FROM idempotency WHERE (user_id, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""
_REMEMBER = """
UPDATE idempotency i SET fingerprint = v.f, status = v.s, body = v.b
FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::bytea[]) AS v(u, k, f, s, b)
WHERE i.user_id = v.u AND i.key = v.k
"""
_AUDIT = sql.pyformat(sql.AUDIT) + " RETURNING id"
_ADD_STANDINGS = """
INSERT INTO standings (board, season, rank, user_id, score, name)
SELECT %s, %s, %s + r.n - 1, r.u, r.s, r.name
FROM unnest(%s::text[], %s::bigint[], %s::text[]) WITH ORDINALITY AS r(u, s, name, n)
ON CONFLICT (board, season, rank) DO NOTHING
"""
_POINTS_SINCE = sql.pyformat(
    f"SELECT user_id, {sql.POINTS} FROM ledger "  # noqa: S608 (constants)
    "WHERE user_id = ANY(?) AND at_ms >= ? GROUP BY user_id"
)


@cache
def _q(statement: str) -> str:
    """``store/sql.py``'s qmark statement, for psycopg."""
    return sql.pyformat(statement)


def lock_id(name: str) -> int:
    """A signed 64-bit advisory lock id for ``name``, the same on every instance."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big",
                          signed=True)


def failure(exc: psycopg.Error | psycopg_pool.PoolTimeout) -> StoreUnavailable:
    """A driver error as the project's: a constraint refuses that update alone; a
    deadlock or serialization failure may pass when the transaction runs again."""
    if isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure):
        return TransactionConflict(f"the transaction conflicted: {describe(exc)}", "conflict")
    if isinstance(exc, psycopg.errors.IntegrityError | psycopg.errors.DataError
                  | psycopg.errors.PipelineAborted):
        return StatementFailed(f"the database refused an update: {describe(exc)}",
                               "statement_failed")
    return StoreUnavailable()


class _PostgresTransaction:
    """Statements on one pooled connection, in pipeline mode: a statement whose result
    nobody waits for travels with the next that is waited for, or with the commit."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def _execute(self, statement: str, params: Sequence[Any]) -> psycopg.AsyncCursor[Any]:
        try:
            # Planned at each execution, never prepared: a prepared statement's generic
            # plan, made while a table was small, outlives its growth (a seq scan of
            # entries per user, 70 ms a batch, until the next ANALYZE); a batch's
            # statements run once per batch, and planning them costs far less than that.
            return await self._conn.execute(statement, tuple(params), prepare=False)
        except psycopg.Error as exc:
            raise failure(exc) from exc

    @staticmethod
    async def _all(cursor: psycopg.AsyncCursor[Any]) -> list[Any]:
        try:
            return await cursor.fetchall()
        except psycopg.Error as exc:
            raise failure(exc) from exc

    # -- common.Statements

    async def rows(self, statement: str, params: Sequence[Any]) -> list[Any]:
        return await self._all(await self._execute(_q(statement), params))

    async def run(self, statement: str, params: Sequence[Any]) -> None:
        await self._execute(_q(statement), params)

    async def reserve(self, count: int) -> list[int]:
        if count <= 0:
            return []
        return [row[0] for row in await self._all(await self._execute(_IDS, (count,)))]

    async def lock(self, name: str) -> None:
        await self._execute(_LOCK, (lock_id(name),))

    # -- the batch of writes: one round trip to read, the writes travel with the commit

    async def read(self, request: BatchRead) -> BatchState:
        state = BatchState()
        users, keys = [k[0] for k in request.keys], [k[1] for k in request.keys]
        if request.keys:
            await self._execute(_CLAIMS, (request.now_ms, users, keys))
        found = await self._execute(_RESPONSES, (users, keys)) if request.keys else None
        # Users in one order on every instance (by lock id: names that share one still
        # lock in the same order), each held until the transaction ends.
        if request.users:
            await self._execute(_LOCK_ALL, (sorted({lock_id(user) for user in request.users}),))
        banned = await self._execute(_BANNED_AMONG, (list(request.users),))
        board_ids = sorted({board for board, _ in request.slots})
        boards = await self._execute(_BOARDS_OF, (board_ids,)) if board_ids else None
        tickets = await self._execute(_TICKETS, (list(request.tickets),))
        slots = list(request.slots)
        entries = await self._execute(_ENTRIES_OF, ([b for b, _ in slots], [u for _, u in slots]))
        ids = await self._execute(_IDS, (request.ids,))
        if found is not None:
            for user_id, key, fingerprint, status, body in await self._all(found):
                state.responses[(user_id, key)] = (
                    None if status == 0 else StoredResponse(fingerprint, status, bytes(body)))
        state.banned = {row[0] for row in await self._all(banned)}
        if boards is not None:
            state.boards = {row[0]: sql.board(row) for row in await self._all(boards)}
        state.tickets = {row[0]: Ticket(*row) for row in await self._all(tickets)}
        state.entries = {(row[0], row[2]): sql.entry(row[0], row[1], row[2:])
                         for row in await self._all(entries) if row[0] in state.boards}
        state.ids = [row[0] for row in await self._all(ids)]
        return state

    async def write(self, batch: BatchWrite) -> None:
        if batch.ledger:
            rows = batch.ledger
            await self._execute(_ADD_LEDGER, (
                [r.id for r in rows], [r.board for r in rows], [r.season for r in rows],
                [r.user_id for r in rows], [r.kind for r in rows], [r.amount for r in rows],
                [r.at_ms for r in rows], [r.source for r in rows]))
        if batch.entries:
            es = batch.entries
            await self._execute(_SET_ENTRIES, (
                [e.board for e, _, _ in es], [season for _, season, _ in es],
                [e.user_id for e, _, _ in es], [e.score for e, _, _ in es],
                [e.seq for e, _, _ in es], [at for _, _, at in es]))
        if batch.names:
            await self._execute(_SET_NAMES, (list(batch.names), list(batch.names.values())))
        if batch.redeemed:
            await self._execute(_REDEEM, ([t for t, _ in batch.redeemed],
                                          [at for _, at in batch.redeemed]))
        if batch.released:
            await self._execute(_RELEASE, ([u for u, _ in batch.released],
                                           [k for _, k in batch.released]))

    async def remember(self, responses: Sequence[tuple[Key, StoredResponse]]) -> None:
        if responses:
            await self._execute(_REMEMBER, (
                [u for (u, _), _ in responses], [k for (_, k), _ in responses],
                [r.fingerprint for _, r in responses], [r.status for _, r in responses],
                [r.body for _, r in responses]))

    # -- the rest

    async def issue_ticket(self, ticket: Ticket, now_ms: int) -> None:
        await self.run(sql.ISSUE_TICKET, (ticket.id, ticket.user_id, ticket.kind, ticket.points,
                                          now_ms, ticket.not_before_ms, ticket.expires_ms,
                                          ticket.board))

    async def record_events(self, events: Sequence[SecurityEvent]) -> None:
        try:
            async with self._conn.cursor() as cursor:
                await cursor.executemany(_q(sql.RECORD_EVENT), [
                    (e.user_id, e.at_ms, e.kind, e.detail) for e in events])
        except psycopg.Error as exc:
            raise failure(exc) from exc

    async def flag(self, user_id: str, reason: str, now_ms: int) -> bool:
        return bool(await self.rows(sql.FLAG, (user_id, reason, now_ms)))

    async def audit(self, admin: str, action: str, target: str, detail: str,
                    now_ms: int) -> int:
        ((audit_id,),) = await self._all(await self._execute(
            _AUDIT, (now_ms, admin, action, target, detail)))
        return int(audit_id)

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
        found = await self.rows(sql.BOARD + " FOR UPDATE", (board_id,))
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
        return await self._count(sql.FORGET_TICKETS, (before_ms, limit))

    async def forget_responses(self, before_ms: int, limit: int) -> int:
        return await self._count(sql.FORGET, (before_ms, limit))

    async def _count(self, statement: str, params: tuple[Any, ...]) -> int:
        """Rows a DELETE removed (counted in SQL: in pipeline mode rowcount waits)."""
        counted = f"WITH gone AS ({statement.strip()} RETURNING 1) SELECT count(*) FROM gone"  # noqa: S608
        ((count,),) = await self.rows(counted, params)
        return int(count)


class PostgresStore:
    """The shared Store. Every instance of a deployment points at the same database."""

    def __init__(self, url: str, pool_size: int = 4) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        # Every keyed POST asks before it is admitted (a replay is not counted): the
        # asks of one turn of the loop share one query and one pooled connection.
        self._find_responses = Coalescer(self._responses_of)

    async def open(self) -> None:
        pool = psycopg_pool.AsyncConnectionPool(
            self._url, min_size=1, max_size=self._pool_size, open=False, timeout=5.0,
            kwargs={"autocommit": True},
        )
        try:
            # One connection first: its error names the cause (refused, no such database,
            # authentication); a pool that cannot fill only says that it timed out.
            probe = await psycopg.AsyncConnection.connect(self._url, connect_timeout=10)
            await probe.close()
            await pool.open(wait=True, timeout=10.0)
            self._pool = pool
            await self._migrate()
        except StoreUnavailable:
            await self.close()
            await pool.close()
            raise
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            await self.close()
            await pool.close()
            raise StoreUnavailable(
                f"cannot open the PostgreSQL database: {describe(exc)}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    async def _migrate(self) -> None:
        steps = migrations("postgresql")
        assert self._pool is not None
        # The pool's own connection: a failing step's error reaches open() with its cause.
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_LOCK, (_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS scoreboard_schema (version integer NOT NULL)")
            row = await (await conn.execute("SELECT max(version) FROM scoreboard_schema")
                         ).fetchone()
            current = row[0] or 0 if row else 0
            if current > len(steps):
                raise StoreUnavailable(
                    f"the database is at schema version {current}, newer than this "
                    f"scoreboard knows ({len(steps)})")
            for step in steps[current:]:
                await conn.execute(step.sql)
                await conn.execute("INSERT INTO scoreboard_schema VALUES (%s)", (step.version,))
        # Statistics before the first batch: a table the planner has never seen analyzed
        # (a new or upgraded database, until autovacuum's first pass a minute or more
        # later) made it look a user's entry up through a rank-order index, reading the
        # board's every entry per user (200 ms a batch at 8,000 entries). ANALYZE samples
        # at most 30,000 rows a table, so this stays short on a big database.
        async with self._pool.connection() as conn:
            await conn.execute("ANALYZE boards, entries, users, idempotency, ledger")

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise failure(exc) from exc

    async def _rows(self, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        async with self._connection() as conn:
            return await (await conn.execute(statement, params)).fetchall()

    async def ping(self) -> None:
        await self._rows("SELECT 1")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Pipeline mode: statements whose results are not needed do not wait on the
        network. BEGIN travels with the first statement waited for and COMMIT with the
        pipeline's closing sync, so a group commit is two round trips (psycopg's own
        ``transaction()`` waits for each: five)."""
        async with self._connection() as conn:
            try:
                async with conn.pipeline():
                    await conn.execute("BEGIN")
                    yield _PostgresTransaction(conn)
                    await conn.execute("COMMIT")
            finally:
                # The block raised, or a statement failed: nothing of it is kept. (A
                # broken connection is the pool's to discard.)
                if conn.info.transaction_status in _OPEN:
                    await conn.execute("ROLLBACK")

    async def secret(self, name: str) -> bytes:
        await self._rows(_q(sql.MAKE_META) + " RETURNING 1", (name, secrets.token_hex(32)))
        ((value,),) = await self._rows(_q(sql.META_VALUE), (name,))
        return bytes.fromhex(value)

    async def find_response(self, user_id: str, key: str) -> StoredResponse | None:
        return await self._find_responses((user_id, key))

    async def _responses_of(self, asks: list[Key]) -> list[StoredResponse | None]:
        rows = await self._rows(_RESPONSES, ([u for u, _ in asks], [k for _, k in asks]))
        found = {(user_id, key): StoredResponse(fingerprint, status, bytes(body))
                 for user_id, key, fingerprint, status, body in rows
                 if status != 0}  # a claim still open is not an answer yet
        return [found.get(ask) for ask in asks]

    async def boards(self) -> list[Board]:
        return [sql.board(row) for row in await self._rows(_q(sql.BOARDS))]

    async def entries(self, board: Board) -> Iterator[Entry]:
        names = dict(await self._rows(_q(sql.NAMES)))
        banned = {row[0] for row in await self._rows(_q(sql.BANNED))}
        rows = await self._rows(_q(sql.ENTRIES), (board.id, board.season))
        return sql.entries(board, rows, names, banned)

    async def banned(self) -> set[str]:
        return {row[0] for row in await self._rows("SELECT user_id FROM bans")}

    async def seasons(self, board_id: str) -> list[Season]:
        return [sql.season(row) for row in await self._rows(_q(sql.SEASONS_OF), (board_id,))]

    async def season(self, board_id: str, season: int) -> Season | None:
        found = await self._rows(_q(sql.SEASON_OF), (board_id, season))
        return sql.season(found[0]) if found else None

    async def unstored(self) -> list[Season]:
        return [sql.season(row) for row in await self._rows(_q(sql.UNSTORED))]

    async def final_standings(self, board: Board, season: Season,
                              chunk: int) -> AsyncIterator[list[Standing]]:
        """A server-side cursor over the rank-order index: rows come ``chunk`` at a time."""
        params = (board.id, season.season, season.ended_ms, season.ended_ms)
        async with self._connection() as conn, conn.transaction():
            try:
                async with conn.cursor(name="final_standings") as cursor:
                    await cursor.execute(_q(sql.final(board)), params)
                    while rows := await cursor.fetchmany(chunk):
                        yield rows
            except psycopg.Error as exc:
                raise failure(exc) from exc

    async def add_standings(self, board_id: str, season: int, first_rank: int,
                            rows: Sequence[Standing]) -> None:
        """One statement (the rows as arrays), in a transaction of its own."""
        if rows:
            async with self._connection() as conn, conn.transaction():
                try:
                    await conn.execute(_ADD_STANDINGS, (
                        board_id, season, first_rank, [r[0] for r in rows],
                        [r[1] for r in rows], [r[2] for r in rows]))
                except psycopg.Error as exc:
                    raise failure(exc) from exc

    async def standings(self, board_id: str, season: int, limit: int,
                        after_rank: int = 0) -> list[RankedUser]:
        return sql.standings(await self._rows(_q(sql.STANDINGS),
                                              (board_id, season, after_rank, limit)))

    async def standing(self, board_id: str, season: int, user_id: str) -> RankedUser | None:
        found = sql.standings(await self._rows(_q(sql.STANDING), (board_id, season, user_id)))
        return found[0] if found else None

    async def top(self, board: Board, limit: int, after: Entry | None = None,
                  offset: int = 0) -> list[RankedUser]:
        if after is None:
            rows = await self._rows(_q(sql.top(board, False)),
                                    (board.id, board.season, limit, offset))
        else:
            rows = await self._rows(_q(sql.top(board, True)), (
                board.id, board.season, after.score, after.score, after.seq, limit, offset))
        return sql.ranked(rows, offset + 1)

    async def ranked(self, board: Board, user_id: str) -> RankedUser | None:
        async with self._connection() as conn:
            found = await (await conn.execute(_q(sql.ENTRY), (board.id, board.season, user_id))
                           ).fetchone()
            banned = await (await conn.execute(_q(sql.IS_BANNED), (user_id,))).fetchone()
            if found is None or banned is not None:
                return None
            entry = sql.entry(board.id, board.season, found)
            params = (board.id, board.season, entry.score, entry.score, entry.seq, user_id)
            (ahead,) = await (await conn.execute(_q(sql.rank(board)), params)).fetchone()  # type: ignore[misc]
        return RankedUser(ahead + 1, user_id, entry.name or user_id, entry.score)

    async def count(self, board: Board) -> int:
        return int((await self._rows(_q(sql.COUNT), (board.id, board.season)))[0][0])

    async def ahead(self, board: Board, score: int, seq: int) -> int:
        params = (board.id, board.season, score, score, seq)
        return int((await self._rows(_q(sql.ahead_of(board)), params))[0][0])

    async def user_record(self, user_id: str, limit: int) -> UserRecord:
        return sql.user_record(
            user_id,
            await self._rows(_q(sql.NAME_OF), (user_id,)),
            await self._rows(_q(sql.ENTRIES_OF), (user_id,)),
            await self._rows(_q(sql.IS_BANNED), (user_id,)),
            await self._rows(_q(sql.LEDGER_OF), (user_id, limit)),
            await self._rows(_q(sql.EVENTS_OF), (user_id, limit)),
            await self._rows(_q(sql.FLAGS_OF), (user_id,)),
        )

    async def flags(self) -> list[Flag]:
        return sql.flags(await self._rows(_q(sql.FLAGS)))

    async def points_since(self, user_ids: Sequence[str], since_ms: int) -> dict[str, int]:
        rows = await self._rows(_POINTS_SINCE, (list(user_ids), since_ms))
        return {user_id: int(points) for user_id, points in rows if points}
