"""PostgreSQL's plans for the hot statements, on a table the planner has no statistics
for (a new database, or a board that just grew): a batch's look-up of entries by key
takes the primary key, never a rank-order index (which read every entry of the board
per user: 200 ms a batch), and a rank-order read can still take its index; and a
batch's statements are planned for the table as it is now, not as it was when a plan
was first cached (a seq scan of entries per user, 70 ms a batch)."""

from __future__ import annotations

import psycopg
from psycopg import sql as pgsql

from scoreboard.model import Board, BoardSpec
from scoreboard.store import sql
from scoreboard.store.base import BatchRead
from scoreboard.store.postgres import _ENTRIES_OF, PostgresStore, _q
from tests.support import postgres_schema


async def plan(url: str, statement: str, types: str, params: tuple[object, ...]) -> str:
    """The generic plan of ``statement`` ($1, $2, ...), as psycopg's prepared ones get."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE q ({types}) AS {statement}")
        arguments = pgsql.SQL(", ").join(pgsql.Literal(p) for p in params)
        rows = await (await conn.execute(
            pgsql.SQL("EXPLAIN EXECUTE q({})").format(arguments))).fetchall()
    return "\n".join(row[0] for row in rows)


async def test_entries_are_looked_up_by_key_without_statistics() -> None:
    async with postgres_schema() as url:
        store = PostgresStore(url)
        await store.open()  # migrates (and analyzes the empty tables)
        await store.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO entries SELECT 'default', 1, 'u' || i, i % 500, i, 0 "
                "FROM generate_series(1, 20000) i")  # grown since: statistics say empty
        numbered = _ENTRIES_OF.replace("%s", "$1", 1).replace("%s", "$2", 1)
        looked_up = await plan(url, numbered, "text[], text[]",
                               (["default"] * 3, ["u1", "u2", "u3"]))
        assert "entries_pkey" in looked_up, looked_up
        assert "entries_asc" not in looked_up and "entries_desc" not in looked_up, looked_up
        board = Board(BoardSpec("default", "Scoreboard"), 1, 0)
        in_order = _q(sql.top(board, False))
        for i in range(1, in_order.count("%s") + 1):
            in_order = in_order.replace("%s", f"${i}", 1)
        top = await plan(url, in_order, "text, int, bigint, bigint", ("default", 1, 10, 0))
        assert "entries_desc" in top, top


async def test_a_batch_is_planned_for_the_table_as_it_is_now() -> None:
    async with postgres_schema() as url:
        store = PostgresStore(url, pool_size=1)  # one connection: every batch on it
        await store.open()
        try:
            # Batches while the table is empty: enough for psycopg to prepare a statement
            # (after 5) and for PostgreSQL to settle on a cached generic plan (5 more).
            for i in range(12):
                async with store.transaction() as tx:
                    await tx.read(BatchRead(now_ms=i, users=["u1"], slots=[("default", "u1")]))
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(
                    "INSERT INTO entries SELECT 'default', 1, 'u' || i, i, i, 0 "
                    "FROM generate_series(1, 50000) i")
            slots = [("default", f"u{i}") for i in range(1, 200, 3)]
            scans = ("SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables "  # this backend's
                     "WHERE relname = 'entries' AND schemaname = current_schema()")
            async with store.transaction() as tx:
                ((seq_before, index_before),) = await tx.rows(scans, ())
                state = await tx.read(BatchRead(now_ms=99, slots=slots))
                ((seq_after, index_after),) = await tx.rows(scans, ())
        finally:
            await store.close()
        assert len(state.entries) == len(slots)
        assert seq_after == seq_before, "a batch read all of entries"
        assert index_after - index_before >= len(slots)
