"""The Store contract, one suite for every backend (parametrised by ``store``).

Backend-specific details (SQLite pragmas, migration files) live in
``tests/unit/test_sqlite_store.py``; here is only what every Store must do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scoreboard.errors import StoreUnavailable
from scoreboard.model import MAX_TOTAL, SecurityEvent, StoredResponse, Ticket
from scoreboard.store.base import Store
from scoreboard.store.postgres import PostgresStore
from scoreboard.store.sqlite import SQLiteStore
from tests.support import postgres_schema

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        backend: Store = SQLiteStore(tmp_path / "contract.db")
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()
        return
    async with postgres_schema() as url:  # fails, never skips, without a PostgreSQL
        backend = PostgresStore(url)
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()


async def test_add_accumulates_with_growing_seq(store: Store) -> None:
    async with store.transaction() as tx:
        a1 = await tx.add("a", 5, "Ann", "increment", 1)
        b1 = await tx.add("b", 7, None, "increment", 2)
        a2 = await tx.add("a", 3, None, "increment", 3)
    assert a1 and b1 and a2
    assert (a2.total, a2.name) == (8, "Ann")  # no name keeps the stored one
    assert a1.seq < b1.seq < a2.seq
    totals = {t.user_id: (t.total, t.seq) for t in await store.totals()}
    assert totals == {"a": (8, a2.seq), "b": (7, b1.seq)}


async def test_the_cap_refuses_and_writes_nothing(store: Store) -> None:
    async with store.transaction() as tx:
        assert (await tx.add("a", MAX_TOTAL - 1, None, "s", 0)).total == MAX_TOTAL - 1  # type: ignore[union-attr]
        assert await tx.add("a", 2, None, "s", 0) is None
        assert (await tx.add("a", 1, None, "s", 0)).total == MAX_TOTAL  # type: ignore[union-attr]
    record = await store.user_record("a", 10)
    assert [e.delta for e in record.ledger] == [1, MAX_TOTAL - 1]


async def test_a_failed_transaction_keeps_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.add("a", 5, None, "s", 0)
            await tx.remember("a", "k", StoredResponse("f", 200, b"{}"), 0)
            raise RuntimeError("boom")
    assert await store.totals() == []
    assert await store.find_response("a", "k") is None


async def test_responses_are_remembered_per_user_and_purged(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.remember("a", "k", StoredResponse("f1", 200, b"first"), 1000)
        await tx.remember("b", "k", StoredResponse("f2", 200, b"second"), 5000)
        assert await tx.find_response("a", "k") == StoredResponse("f1", 200, b"first")
    assert await store.find_response("b", "k") == StoredResponse("f2", 200, b"second")
    async with store.transaction() as tx:
        assert await tx.forget_responses(2000, 10) == 1
    assert await store.find_response("a", "k") is None
    assert await store.find_response("b", "k") is not None


async def test_tickets_redeem_once(store: Store) -> None:
    ticket = Ticket("t" * 32, "a", "demo", 10, 100, 10_000)
    async with store.transaction() as tx:
        await tx.issue_ticket(ticket, 0)
    async with store.transaction() as tx:
        assert await tx.find_ticket(ticket.id) == ticket
        assert await tx.redeem_ticket(ticket.id, 500)
        assert not await tx.redeem_ticket(ticket.id, 600)
        assert (await tx.find_ticket(ticket.id)).redeemed_ms == 500  # type: ignore[union-attr]
        assert await tx.find_ticket("u" * 32) is None


async def test_expired_tickets_are_purged(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.issue_ticket(Ticket("o" * 32, "a", "demo", 10, 0, 1000), 0)
        await tx.issue_ticket(Ticket("f" * 32, "a", "demo", 10, 0, 10**13), 0)
        assert await tx.forget_tickets(2000, 100) == 1
        assert await tx.find_ticket("o" * 32) is None
        assert await tx.find_ticket("f" * 32) is not None


async def test_bans_hide_totals_and_unban_returns_them(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.add("a", 5, None, "s", 0)
        await tx.add("b", 6, None, "s", 0)
        assert await tx.ban("a", "root", 1)
        assert not await tx.ban("a", "root", 2)
    assert await store.banned() == {"a"}
    assert [t.user_id for t in await store.totals()] == ["b"]
    assert (await store.user_record("a", 10)).banned
    async with store.transaction() as tx:
        back = await tx.unban("a")
    assert back is not None and back.total == 5
    assert await store.banned() == set()


async def test_revert_undoes_once_with_one_entry(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.add("a", 5, None, "s", 1000)
        await tx.add("a", 7, None, "s", 2000)
        await tx.add("a", 11, None, "s", 3000)
    async with store.transaction() as tx:
        total, undone = await tx.revert("a", 2000, "revert:root", 4000)
    assert total is not None and (total.total, undone) == (5, 2)
    async with store.transaction() as tx:
        again, undone = await tx.revert("a", 0, "revert:root", 5000)
    assert again is not None and (again.total, undone) == (0, 1)  # only what is left
    ledger = (await store.user_record("a", 10)).ledger
    assert [(e.delta, e.source) for e in ledger[:2]] == [(-5, "revert:root"), (-18, "revert:root")]
    assert (await store.user_record("nobody", 10)).total is None


async def test_the_board_read_from_the_store(store: Store) -> None:
    """While Redis is away the board, ranks and answers' ranks come from the store:
    highest first, equal totals by who reached them first, banned users off."""
    async with store.transaction() as tx:
        await tx.add("a", 5, "Ann", "s", 0)
        await tx.add("b", 7, None, "s", 0)
        await tx.add("c", 5, None, "s", 0)  # ties with a, reached it later
        await tx.add("d", 9, None, "s", 0)
        await tx.ban("d", "root", 0)
    assert [(e.rank, e.user_id, e.name, e.score) for e in await store.top(10)] == [
        (1, "b", "b", 7), (2, "a", "Ann", 5), (3, "c", "c", 5)]
    assert [e.user_id for e in await store.top(1)] == ["b"]
    c = await store.ranked("c")
    assert c is not None and (c.rank, c.score) == (3, 5)
    assert await store.ranked("d") is None  # banned
    assert await store.ranked("nobody") is None
    async with store.transaction() as tx:
        total = await tx.add("c", 3, None, "s", 0)  # 8: now first, seen inside the transaction
        assert total is not None and await tx.rank_of(total) == 1
        a = await tx.add("a", 3, None, "s", 0)  # 8 too, reached after c
        assert a is not None and await tx.rank_of(a) == 2


async def test_events_and_flags(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.record_events([SecurityEvent("a", 1, "other_user", ""),
                                SecurityEvent("a", 2, "flagged", "too_fast"),
                                SecurityEvent("a", 3, "flagged", "velocity"),
                                SecurityEvent("b", 4, "rate_limited", "")])
    events = (await store.user_record("a", 10)).events
    assert [e.kind for e in events] == ["flagged", "flagged", "other_user"]  # newest first
    (flag,) = await store.flagged()
    assert (flag.user_id, flag.at_ms, set(flag.detail.split(","))) == (
        "a", 2, {"too_fast", "velocity"})


async def test_a_closed_store_is_unavailable(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        async with store.transaction():
            pass
    await store.open()  # and it comes back
    await store.ping()
