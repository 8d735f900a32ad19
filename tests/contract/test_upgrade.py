"""An existing database upgrades in place: a single-board database (the schema before
boards, with data in every table) becomes the board ``default``, season 1 (open), nothing
lost. On both stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from scoreboard.model import Board, Entry, Season
from scoreboard.store.base import BatchRead, Store
from scoreboard.store.migrations import migrations
from scoreboard.store.postgres import PostgresStore
from scoreboard.store.sqlite import SQLiteStore
from tests.support import POSTGRES, postgres_schema

SQLITE_BEFORE_BOARDS = 6  # the schema version of the last single-board release
POSTGRES_BEFORE_BOARDS = 3

# The same single-board data in either dialect (qmark vs pyformat handled below).
LEDGER = [(1, "alice", 7, 1000, "increment", None), (2, "bob", 5, 2000, "increment", None),
          (3, "alice", 4, 3000, "action:demo:abcdefgh", 4), (4, "alice", -4, 4000,
          "revert:root", None), (5, "alice", 2, 5000, "increment", None)]
TOTALS = [("alice", 9, 5, 5000, "Alice"), ("bob", 5, 2, 2000, None)]


async def check(store: Store) -> None:
    (default,) = await store.boards()
    assert (default.id, default.season, default.season_started_ms) == ("default", 1, 1000)
    assert default.spec.operator == "increment" and default.spec.sort == "desc"
    entries = {e.user_id: e for e in await store.entries(default)}
    assert entries == {"alice": Entry("default", 1, "alice", 9, 5, "Alice"),
                       "bob": Entry("default", 1, "bob", 5, 2, None)}
    record = await store.user_record("alice", 10)
    assert record.name == "Alice"
    assert [(e.id, e.kind, e.amount) for e in record.ledger] == [
        (5, "add", 2), (4, "revert", -4), (3, "add", 4), (1, "add", 7)]
    assert record.flags == ["velocity"]
    assert await store.banned() == {"carol"}
    async with store.transaction() as tx:  # ids go on from the old ledger's
        state = await tx.read(BatchRead(now_ms=6000, tickets=["t" * 32], ids=2))
    assert state.ids == [6, 7]
    assert state.tickets["t" * 32].board == "default"
    assert await store.find_response("alice", "k") is not None
    assert isinstance(default, Board)
    # Seasons came later: the board's one season so far is open, from its start.
    assert await store.seasons("default") == [Season("default", 1, 1000)]


async def test_sqlite_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in migrations("sqlite")[:SQLITE_BEFORE_BOARDS]:
        conn.executescript(f"BEGIN; {step.sql}; PRAGMA user_version = {step.version}; COMMIT;")
    fill(conn.execute, "?")
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        await check(store)
    finally:
        await store.close()


async def test_postgres_upgrades_in_place() -> None:
    async with postgres_schema() as url:
        schema = url.rsplit("%3D", 1)[1]
        with psycopg.connect(POSTGRES, options=f"-csearch_path={schema}",
                             autocommit=True) as conn:
            conn.execute("CREATE TABLE scoreboard_schema (version integer NOT NULL)")
            for step in migrations("postgresql")[:POSTGRES_BEFORE_BOARDS]:
                conn.execute(step.sql)  # type: ignore[arg-type]
                conn.execute("INSERT INTO scoreboard_schema VALUES (%s)", (step.version,))
            fill(conn.execute, "%s")
            conn.execute("SELECT setval('ledger_id_seq', 5)")
        store = PostgresStore(url)
        await store.open()
        try:
            await check(store)
        finally:
            await store.close()


def fill(execute: object, mark: str) -> None:
    run = execute  # type: ignore[assignment]

    def q(statement: str) -> str:
        return statement.replace("?", mark)

    for row in LEDGER:
        run(q("INSERT INTO ledger (id, user_id, delta, at_ms, source, reverted_by) "  # type: ignore[operator]
              "VALUES (?, ?, ?, ?, ?, ?)"), row)
    for row in TOTALS:
        run(q("INSERT INTO totals (user_id, total, seq, reached_ms, name) VALUES (?, ?, ?, ?, ?)"), row)  # type: ignore[operator]
    run(q("INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?)"),  # type: ignore[operator]
        ("alice", "k", "f", 200, b"{}", 1000))
    run(q("INSERT INTO tickets VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),  # type: ignore[operator]
        ("t" * 32, "alice", "demo", 10, 0, 1, 10**13, None))
    run(q("INSERT INTO bans VALUES (?, ?, ?)"), ("carol", 0, "root"))  # type: ignore[operator]
    run(q("INSERT INTO flags VALUES (?, ?, ?)"), ("alice", "velocity", 0))  # type: ignore[operator]
