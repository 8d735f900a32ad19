"""The Store contract, one suite for every backend (parametrised by ``store``).

Backend-specific details (SQLite pragmas, migration files) live in
``tests/unit/test_sqlite_store.py``; here is only what every Store must do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scoreboard.errors import StoreUnavailable
from scoreboard.model import MAX_TOTAL, Flag, SecurityEvent, StoredResponse, Ticket
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
            assert await tx.claim("a", "k", 0) is None
            await tx.remember("a", "k", StoredResponse("f", 200, b"{}"))
            raise RuntimeError("boom")
    assert await store.totals() == []
    assert await store.find_response("a", "k") is None


async def test_responses_are_remembered_per_user_and_purged(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.claim("a", "k", 1000) is None
        await tx.remember("a", "k", StoredResponse("f1", 200, b"first"))
        assert await tx.claim("b", "k", 5000) is None
        await tx.remember("b", "k", StoredResponse("f2", 200, b"second"))
    async with store.transaction() as tx:
        assert await tx.claim("a", "k", 6000) == StoredResponse("f1", 200, b"first")
    assert await store.find_response("b", "k") == StoredResponse("f2", 200, b"second")
    async with store.transaction() as tx:
        assert await tx.forget_responses(2000, 10) == 1
    assert await store.find_response("a", "k") is None
    assert await store.find_response("b", "k") is not None


async def test_a_released_key_is_free_again(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.claim("a", "k", 0) is None
        await tx.release("a", "k")
    assert await store.find_response("a", "k") is None
    async with store.transaction() as tx:
        assert await tx.claim("a", "k", 1) is None


async def test_a_claim_waits_for_the_transaction_that_holds_the_key() -> None:
    """Two transactions with one key (two instances on PostgreSQL; SQLite has one writer,
    its transactions never overlap): the second waits for the first and then finds its
    answer, instead of failing at commit."""
    async with postgres_schema() as url:
        store, second = PostgresStore(url), PostgresStore(url)
        await store.open()
        await second.open()
        try:
            await _claim_race(store, second)
        finally:
            await store.close()
            await second.close()


async def _claim_race(store: Store, second: Store) -> None:
    holder_claimed, finish = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with store.transaction() as tx:
            assert await tx.claim("a", "k", 0) is None
            holder_claimed.set()
            await finish.wait()
            await tx.remember("a", "k", StoredResponse("f", 200, b"held"))

    async def waiter() -> StoredResponse | None:
        await holder_claimed.wait()
        async with second.transaction() as tx:
            return await tx.claim("a", "k", 1)

    held = asyncio.create_task(holder())
    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0.3)
    assert not waiting.done()  # blocked on the held key
    finish.set()
    await held
    assert await waiting == StoredResponse("f", 200, b"held")


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
                                SecurityEvent("a", 3, "login", ""),
                                SecurityEvent("b", 4, "rate_limited", "")])
        assert await tx.flag("a", "velocity", 2)
        assert await tx.flag("a", "too_fast", 5)
        assert not await tx.flag("a", "velocity", 6)  # once per reason
        assert await tx.flag("b", "too_fast", 1)
    record = await store.user_record("a", 10)
    assert [e.kind for e in record.events] == ["login", "other_user"]  # newest first
    assert record.flags == ["too_fast", "velocity"]
    assert await store.flags() == [Flag("b", ["too_fast"], 1),
                                   Flag("a", ["too_fast", "velocity"], 2)]


async def test_points_since_counts_what_velocity_counts(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.add("a", 5, None, "increment", 1000)
        await tx.add("a", 7, None, "action:demo:x", 2000)
        await tx.add("b", 9, None, "increment", 500)  # before the window
        await tx.add("c", 4, None, "increment", 3000)
        await tx.revert("c", 0, "revert:root", 3500)  # not points
    assert await store.points_since(["a", "b", "c", "d"], 1000) == {"a": 12, "c": 4}


async def test_bans_are_read_inside_the_transaction(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.banned_among(["a", "b"]) == set()
        await tx.ban("a", "root", 0)
        assert await tx.banned_among(["a", "b"]) == {"a"}  # this transaction's own
    async with store.transaction() as tx:
        assert await tx.banned_among(["b", "a", "c"]) == {"a"}


async def test_an_unredeemed_ticket_redeems_again(store: Store) -> None:
    ticket = Ticket("r" * 32, "a", "demo", 10, 0, 10_000)
    async with store.transaction() as tx:
        await tx.issue_ticket(ticket, 0)
        assert await tx.redeem_ticket(ticket.id, 5)
        await tx.unredeem_ticket(ticket.id)
    async with store.transaction() as tx:
        assert await tx.redeem_ticket(ticket.id, 6)


async def test_a_closed_store_is_unavailable(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        async with store.transaction():
            pass
    await store.open()  # and it comes back
    await store.ping()
