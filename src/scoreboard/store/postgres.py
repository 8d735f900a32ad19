"""PostgresStore: one PostgreSQL database for every instance (psycopg 3, a connection pool).

The same statements as the SQLite store (``store/sql.py``), converted to psycopg's
placeholders; a commit is durable when PostgreSQL says so (``synchronous_commit`` on,
its default). The schema is created or upgraded at open, under an advisory lock so
that instances starting together migrate once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool

from scoreboard.errors import (
    StatementFailed,
    StoreUnavailable,
    TransactionConflict,
    describe,
)
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

_ADD_LEDGER = sql.pyformat(sql.ADD_LEDGER) + " RETURNING id"
_AUDIT = sql.pyformat(sql.AUDIT) + " RETURNING id"
# The ledger entry and the new total in one round trip (the SQLite store runs
# sql.ADD_LEDGER then sql.ADD_TOTAL): a batch waits on the network once per update for
# this instead of twice. No total comes back past the cap.
_ADD = sql.upserting_total(
    """
WITH entry AS (
    INSERT INTO ledger (user_id, delta, at_ms, source)
    VALUES (%(user)s, %(delta)s::bigint, %(at)s::bigint, %(source)s) RETURNING id
), total AS (
    INSERT INTO totals (user_id, total, seq, reached_ms, name)
    SELECT %(user)s, %(delta)s::bigint, entry.id, %(at)s::bigint, %(name)s::text FROM entry
""",
    after="""
)
SELECT entry.id, total.total, total.name FROM entry LEFT JOIN total ON true
""",
)
_TOTALS = (
    "SELECT user_id, total, seq, name FROM totals "
    "WHERE user_id NOT IN (SELECT user_id FROM bans)"
)
_MIGRATION_LOCK = 7_303_240_117  # any constant: the advisory lock all instances agree on

Q = {name: sql.pyformat(getattr(sql, name)) for name in (
    "FIND_RESPONSE", "CLAIM", "REMEMBER", "RELEASE", "ISSUE_TICKET", "FIND_TICKET",
    "REDEEM_TICKET", "UNREDEEM_TICKET", "FLAG", "FLAGS", "FLAGS_OF", "RECORD_EVENT", "BAN",
    "TOTAL_OF", "TO_REVERT", "APPLY_REVERT", "LEDGER_OF", "EVENTS_OF", "FORGET_TICKETS",
    "FORGET", "IS_BANNED", "TOP", "RANKED", "AHEAD",
)}
_BANNED_AMONG = "SELECT user_id FROM bans WHERE user_id = ANY(%s)"
_POINTS_SINCE = sql.pyformat(
    f"SELECT user_id, {sql.POINTS} FROM ledger "  # noqa: S608 (constants)
    "WHERE user_id = ANY(?) AND at_ms >= ? GROUP BY user_id"
)


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
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def _one(self, statement: str, params: tuple[Any, ...] | dict[str, Any]) -> Any:
        """Run a statement that returns rows and wait for its first (None when none)."""
        try:
            cursor = await self._conn.execute(statement, params)
            return await cursor.fetchone()
        except psycopg.Error as exc:
            raise failure(exc) from exc

    async def _send(self, statement: str, params: tuple[Any, ...]) -> None:
        """Queue a statement whose result nobody needs: in pipeline mode it travels with
        the next statement that waits, or with the commit. Its errors surface there."""
        try:
            await self._conn.execute(statement, params)
        except psycopg.Error as exc:
            raise failure(exc) from exc

    async def _count(self, statement: str, params: tuple[Any, ...]) -> int:
        """Rows a DELETE removed (counted in SQL: in pipeline mode rowcount waits)."""
        # ``statement`` is one of this module's constants, never input.
        counted = f"WITH gone AS ({statement.strip()} RETURNING 1) SELECT count(*) FROM gone"  # noqa: S608
        (count,) = await self._one(counted, params)
        return int(count)

    async def claim(self, user_id: str, key: str, now_ms: int) -> StoredResponse | None:
        if await self._one(Q["CLAIM"], (user_id, key, b"", now_ms)) is not None:
            return None
        row = await self._one(Q["FIND_RESPONSE"], (user_id, key))
        return StoredResponse(row[0], row[1], bytes(row[2]))

    async def add(self, user_id: str, delta: int, name: str | None, source: str,
                  now_ms: int) -> UserTotal | None:
        seq, total, stored_name = await self._one(_ADD, {
            "user": user_id, "delta": delta, "at": now_ms, "source": source, "name": name})
        if total is None:  # would pass the cap: take the ledger entry back
            await self._send("DELETE FROM ledger WHERE id = %s", (seq,))
            return None
        return UserTotal(user_id, total, seq, stored_name)

    async def remember(self, user_id: str, key: str, response: StoredResponse) -> None:
        await self._send(Q["REMEMBER"], (response.fingerprint, response.status, response.body,
                                        user_id, key))

    async def release(self, user_id: str, key: str) -> None:
        await self._send(Q["RELEASE"], (user_id, key))

    async def issue_ticket(self, ticket: Ticket, now_ms: int) -> None:
        await self._send(Q["ISSUE_TICKET"], (ticket.id, ticket.user_id, ticket.kind,
                                            ticket.points, now_ms, ticket.not_before_ms,
                                            ticket.expires_ms))

    async def find_ticket(self, ticket_id: str) -> Ticket | None:
        row = await self._one(Q["FIND_TICKET"], (ticket_id,))
        return Ticket(*row) if row else None

    async def redeem_ticket(self, ticket_id: str, now_ms: int) -> bool:
        return await self._one(Q["REDEEM_TICKET"], (now_ms, ticket_id)) is not None

    async def unredeem_ticket(self, ticket_id: str) -> None:
        await self._send(Q["UNREDEEM_TICKET"], (ticket_id,))

    async def banned_among(self, user_ids: Sequence[str]) -> set[str]:
        try:
            cursor = await self._conn.execute(_BANNED_AMONG, (list(user_ids),))
            return {row[0] for row in await cursor.fetchall()}
        except psycopg.Error as exc:
            raise failure(exc) from exc

    async def flag(self, user_id: str, reason: str, now_ms: int) -> bool:
        return await self._one(Q["FLAG"], (user_id, reason, now_ms)) is not None

    async def record_events(self, events: Sequence[SecurityEvent]) -> None:
        try:
            async with self._conn.cursor() as cursor:
                await cursor.executemany(Q["RECORD_EVENT"], [
                    (e.user_id, e.at_ms, e.kind, e.detail) for e in events])
        except psycopg.Error as exc:
            raise failure(exc) from exc

    async def audit(self, admin: str, action: str, target: str, detail: str,
                    now_ms: int) -> int:
        (audit_id,) = await self._one(_AUDIT, (now_ms, admin, action, target, detail))
        return int(audit_id)

    async def ban(self, user_id: str, by: str, now_ms: int) -> bool:
        return await self._one(Q["BAN"], (user_id, now_ms, by)) is not None

    async def unban(self, user_id: str) -> UserTotal | None:
        await self._send("DELETE FROM bans WHERE user_id = %s", (user_id,))
        row = await self._one(Q["TOTAL_OF"], (user_id,))
        return UserTotal(*row) if row else None

    async def revert(self, user_id: str, since_ms: int, source: str,
                     now_ms: int) -> tuple[UserTotal | None, int]:
        try:
            undo = await (await self._conn.execute(Q["TO_REVERT"], (user_id, since_ms))).fetchall()
        except psycopg.Error as exc:
            raise failure(exc) from exc
        delta = -sum(d for _, d in undo)
        if not undo or delta == 0:
            row = await self._one(Q["TOTAL_OF"], (user_id,))
            return (UserTotal(*row) if row else None), 0
        (seq,) = await self._one(_ADD_LEDGER, (user_id, delta, now_ms, source))
        await self._send("UPDATE ledger SET reverted_by = %s WHERE id = ANY(%s)",
                        (seq, [entry_id for entry_id, _ in undo]))
        row = await self._one(Q["APPLY_REVERT"], (delta, seq, now_ms, user_id))
        return UserTotal(user_id, row[0], seq, row[1]), len(undo)

    async def rank_of(self, total: UserTotal) -> int:
        params = (total.total, total.total, total.seq, total.user_id)
        return int((await self._one(Q["AHEAD"], params))[0]) + 1

    async def forget_tickets(self, before_ms: int, limit: int) -> int:
        return await self._count(Q["FORGET_TICKETS"], (before_ms, limit))

    async def forget_responses(self, before_ms: int, limit: int) -> int:
        return await self._count(Q["FORGET"], (before_ms, limit))


class PostgresStore:
    """The shared Store. Every instance of a deployment points at the same database."""

    def __init__(self, url: str, pool_size: int = 4) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: psycopg_pool.AsyncConnectionPool | None = None

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
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
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
        # Pipeline mode: statements whose results are not needed do not wait on the network.
        async with self._connection() as conn, conn.pipeline(), conn.transaction():
            yield _PostgresTransaction(conn)

    async def find_response(self, user_id: str, key: str) -> StoredResponse | None:
        rows = await self._rows(Q["FIND_RESPONSE"], (user_id, key))
        return StoredResponse(rows[0][0], rows[0][1], bytes(rows[0][2])) if rows else None

    async def totals(self) -> list[UserTotal]:
        return [UserTotal(*row) for row in await self._rows(_TOTALS)]

    async def banned(self) -> set[str]:
        return {row[0] for row in await self._rows("SELECT user_id FROM bans")}

    async def top(self, limit: int) -> list[RankedUser]:
        return sql.top(await self._rows(Q["TOP"], (limit,)))

    async def ranked(self, user_id: str) -> RankedUser | None:
        async with self._connection() as conn:
            found = await (await conn.execute(Q["RANKED"], (user_id,))).fetchone()
            if found is None:
                return None
            total, seq, name = found
            params = (total, total, seq, user_id)
            (ahead,) = await (await conn.execute(Q["AHEAD"], params)).fetchone()  # type: ignore[misc]
        return RankedUser(ahead + 1, user_id, name, total)

    async def user_record(self, user_id: str, limit: int) -> UserRecord:
        return sql.user_record(
            user_id,
            await self._rows(Q["TOTAL_OF"], (user_id,)),
            await self._rows(Q["IS_BANNED"], (user_id,)),
            await self._rows(Q["LEDGER_OF"], (user_id, limit)),
            await self._rows(Q["EVENTS_OF"], (user_id, limit)),
            await self._rows(Q["FLAGS_OF"], (user_id,)),
        )

    async def flags(self) -> list[Flag]:
        return sql.flags(await self._rows(Q["FLAGS"]))

    async def points_since(self, user_ids: Sequence[str], since_ms: int) -> dict[str, int]:
        rows = await self._rows(_POINTS_SINCE, (list(user_ids), since_ms))
        return {user_id: int(points) for user_id, points in rows if points}
