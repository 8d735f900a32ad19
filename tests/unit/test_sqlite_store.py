"""SQLiteStore: migrations in place, constraints, durability settings, group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from scoreboard.errors import StoreUnavailable
from scoreboard.groupcommit import GroupCommitter
from scoreboard.model import MAX_TOTAL, SecurityEvent, StoredResponse
from scoreboard.store.base import BatchRead
from scoreboard.store.migrations import migrations
from scoreboard.store.sqlite import SQLiteStore


async def test_pragmas_and_schema(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        conn = store._writer
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(migrations("sqlite"))
    finally:
        await store.close()


async def test_an_older_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    first = migrations("sqlite")[0]
    conn.executescript(f"BEGIN; {first.sql}; PRAGMA user_version = 1; COMMIT;")
    conn.execute("INSERT INTO ledger (user_id, delta, at_ms, source) VALUES ('a', 7, 0, 'x')")
    conn.execute("INSERT INTO totals VALUES ('a', 7, 1, 0, 'Ann')")
    conn.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        (default,) = await store.boards()
        assert [(e.user_id, e.score, e.name) for e in await store.entries(default)] == [
            ("a", 7, "Ann")]
        async with store.transaction() as tx:  # the table version 2 added works
            state = await tx.read(BatchRead(now_ms=1, keys=[("a", "k")], ids=1))
            assert state.responses == {("a", "k"): None} and state.ids == [2]
            await tx.remember([(("a", "k"), StoredResponse("f", 200, b"{}"))])
        assert await store.find_response("a", "k") == StoredResponse("f", 200, b"{}")
    finally:
        await store.close()


async def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreUnavailable):
        await SQLiteStore(path).open()


async def test_check_constraints_refuse_non_integers(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    for i, bad in enumerate(("1.5", "'seven'", str(MAX_TOTAL + 1), "-1")):
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(f"INSERT INTO entries VALUES ('default', 1, 'x{i}', {bad}, 1, 0)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO ledger (board, season, user_id, kind, amount, at_ms, source) "
                     "VALUES ('default', 1, 'x', 'gift', 5, 0, 's')")


async def record(tx, jobs):  # type: ignore[no-untyped-def]
    """A work function: one security event per job, its job number as the detail."""
    await tx.record_events([SecurityEvent(f"u{j}", 0, "test", str(j)) for j in jobs])
    return list(jobs)


async def events(store: SQLiteStore) -> int:
    return len(store._reads("SELECT 1 FROM security_events", ()))


async def test_group_commit_batches_what_queued(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    batches: list[int] = []

    async def after(results):  # type: ignore[no-untyped-def]
        return None

    committer = GroupCommitter(store, record, after, observe_batch=batches.append)
    committer.start()
    try:
        results = await asyncio.gather(*(committer.submit(i) for i in range(500)))
        assert results == list(range(500))
        assert sum(batches) == 500
        assert len(batches) < 50  # one fsync served many updates
        assert await events(store) == 500
    finally:
        await committer.stop()
        await store.close()


async def test_group_commit_fails_the_whole_batch_on_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", lock_timeout=0.2)
    await store.open()

    async def after(results):  # type: ignore[no-untyped-def]
        return None

    committer = GroupCommitter(store, record, after)
    committer.start()
    locker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        results = await asyncio.gather(*(committer.submit(i) for i in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert await committer.submit(7) == 7
    assert await events(store) == 1
    await committer.stop()
    await store.close()


async def test_a_failure_after_the_commit_still_answers_and_keeps_the_writer(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    calls = 0

    async def after(results):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the cache went away")

    committer = GroupCommitter(store, record, after)
    committer.start()
    try:
        assert await committer.submit(1) == 1  # committed: answered
        assert await committer.submit(2) == 2  # and the writer lives on
        assert await events(store) == 2
    finally:
        await committer.stop()
        await store.close()
