"""The Store contract for seasons, on every backend: a reset moves a board on once and
from the season expected, writes land in the season current when they commit, and a
closed season's final standings are its entries in rank order without whoever was
banned when it ended, stored once however often (or by however many) they are stored."""

from __future__ import annotations

import asyncio

from scoreboard.model import Board, Season
from scoreboard.store.base import Store
from scoreboard.store.postgres import PostgresStore
from tests.contract.test_store import boards, scores, write
from tests.support import postgres_schema


async def reset(store: Store, board_id: str, ended_ms: int,
                season: int | None = None) -> Board | None:
    async with store.transaction() as tx:
        board = await tx.board_to_change(board_id)
        assert board is not None
        if season is not None:
            board = Board(board.spec, season, board.season_started_ms)
        return await tx.reset_season(board, ended_ms)


async def final(store: Store, board: Board, season: Season, chunk: int = 2) -> list[tuple]:
    rows: list[tuple] = []
    async for part in store.final_standings(board, season, chunk):
        assert 1 <= len(part) <= chunk
        rows += [tuple(r) for r in part]
    return rows


async def test_a_reset_moves_the_board_on_once(store: Store) -> None:
    b = await boards(store)
    assert [(s.season, s.started_ms, s.ended_ms) for s in await store.seasons("points")] == [
        (1, 1000, None)]
    await write(store, ("points", "a", 5), ("points", "b", 3))
    moved = await reset(store, "points", 6000)
    assert moved == Board(b["points"].spec, 2, 6000)
    assert await reset(store, "points", 7000, season=1) is None  # done already: once
    assert [(s.season, s.started_ms, s.ended_ms) for s in await store.seasons("points")] == [
        (2, 6000, None), (1, 1000, 6000)]
    assert await store.season("points", 3) is None
    # A write now belongs to season 2, on its own.
    await write(store, ("points", "a", 1), now_ms=6500)
    current = {x.id: x for x in await store.boards()}["points"]
    assert current.season == 2 and scores(await store.entries(current)) == {"a": 1}
    assert await store.count(current) == 1
    closed = await store.season("points", 1)
    assert closed is not None
    assert await final(store, b["points"], closed) == [("a", 5, None), ("b", 3, None)]
    record = await store.user_record("a", 10)
    assert [(e.board, e.season, e.score) for e in record.entries if e.board == "points"] == [
        ("points", 2, 1)]
    assert sorted((e.season, e.amount) for e in record.ledger if e.board == "points") == [
        (1, 5), (2, 1)]


async def test_final_standings_leave_out_who_was_banned_when_it_ended(store: Store) -> None:
    b = await boards(store)
    for user, strokes in (("a", 70), ("b", 68), ("c", 72), ("x", 60), ("y", 65), ("z", 66)):
        await write(store, ("golf", user, strokes))
    async with store.transaction() as tx:
        await tx.ban("x", "root", 5500)  # banned at the end: left out
        await tx.ban("z", "root", 5200)
        await tx.unban("z", 5800)  # lifted before the end: in
    await reset(store, "golf", 6000)
    async with store.transaction() as tx:
        await tx.ban("y", "root", 6500)  # banned after the end: still in
        await tx.ban("x", "root", 6600)
        await tx.unban("x", 6700)  # lifted after the end: still out
    closed = await store.season("golf", 1)
    assert closed is not None and closed.stored_ms is None
    assert [s.season for s in await store.unstored()] == [1]
    rows = await final(store, b["golf"], closed)
    assert [r[0] for r in rows] == ["y", "z", "b", "a", "c"]  # asc: fewest strokes first


async def test_standings_are_stored_once_and_read_by_rank(store: Store) -> None:
    b = await boards(store)
    await write(store, *[("high", f"u{i}", 100 - i) for i in range(7)])
    await reset(store, "high", 6000)
    closed = await store.season("high", 1)
    assert closed is not None
    rows = await final(store, b["high"], closed, chunk=3)
    for _ in range(2):  # a second storer (or a resumed one) stores the same rows
        await store.add_standings("high", 1, 1, rows[:3])
        await store.add_standings("high", 1, 4, rows[3:])
    async with store.transaction() as tx:
        await tx.mark_stored("high", 1, 7000)
        await tx.mark_stored("high", 1, 8000)  # marked once: the first time stands
    season = await store.season("high", 1)
    assert season is not None and season.stored_ms == 7000
    assert await store.unstored() == []
    page = await store.standings("high", 1, 3)
    assert [(r.rank, r.user_id, r.score) for r in page] == [
        (1, "u0", 100), (2, "u1", 99), (3, "u2", 98)]
    rest = await store.standings("high", 1, 10, after_rank=3)
    assert [r.rank for r in rest] == [4, 5, 6, 7]
    found = await store.standing("high", 1, "u5")
    assert found is not None and (found.rank, found.score) == (6, 95)
    assert await store.standing("high", 1, "nobody") is None


async def test_a_deleted_board_is_not_reset_or_stored(store: Store) -> None:
    await boards(store)
    await reset(store, "last", 6000)
    async with store.transaction() as tx:
        await tx.delete_board("last", 6100)
        assert await tx.board_to_change("last") is None
    assert await store.unstored() == []  # its closed season is not stored either


async def test_two_instances_due_at_once_reset_once() -> None:
    """Two instances on PostgreSQL reset the same board at the same moment: the board's
    row is locked for the reset, so the second finds it done. (SQLite has one writer.)"""
    async with postgres_schema() as url:
        stores = [PostgresStore(url), PostgresStore(url)]
        for s in stores:
            await s.open()
        try:
            await boards(stores[0])
            gate = asyncio.Event()

            async def attempt(s: Store) -> Board | None:
                async with s.transaction() as tx:
                    board = await tx.board_to_change("points")
                    assert board is not None
                    await gate.wait()
                    if board.season != 1:
                        return None
                    return await tx.reset_season(board, 6000)

            tasks = [asyncio.create_task(attempt(s)) for s in stores]
            await asyncio.sleep(0.2)
            gate.set()
            results = await asyncio.gather(*tasks)
            assert sorted(r is not None for r in results) == [False, True]
            assert [s.season for s in await stores[1].seasons("points")] == [2, 1]
        finally:
            for s in stores:
                await s.close()
