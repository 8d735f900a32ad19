"""The Store contract, one suite for every backend (parametrised by ``store``), every case
over several boards, both sorts and all three operators.

Backend-specific details (SQLite pragmas, migration files) live in
``tests/unit/test_sqlite_store.py``; here is only what every Store must do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from scoreboard.errors import StatementFailed, StoreUnavailable
from scoreboard.jobs import ScoreUpdate
from scoreboard.model import (
    DEFAULT_SPEC,
    MAX_TOTAL,
    Board,
    BoardSpec,
    Entry,
    Flag,
    SecurityEvent,
    StoredResponse,
    Ticket,
)
from scoreboard.plan import Plan, Staged
from scoreboard.store.base import BatchRead, BatchWrite, Store
from scoreboard.store.postgres import PostgresStore
from tests.support import postgres_schema

SPECS = [
    BoardSpec("points", "Points"),  # desc, increment
    BoardSpec("golf", "Golf", "asc", "increment"),
    BoardSpec("speedrun", "Speedrun", "asc", "best"),
    BoardSpec("high", "High", "desc", "best"),
    BoardSpec("last", "Last", "desc", "set"),
]


async def boards(store: Store) -> dict[str, Board]:
    async with store.transaction() as tx:
        for spec in SPECS:
            await tx.create_board(spec, 1000, 100)
    return {b.id: b for b in await store.boards()}


async def write(store: Store, *updates: tuple[str, str, int], now_ms: int = 5000,
                key: str | None = None) -> list[Staged | object]:
    """Updates (board, user, amount) as the writer writes them: one batch."""
    jobs = [ScoreUpdate(user, user, board, amount, None, key, "f", "increment")
            for board, user, amount in updates]
    async with store.transaction() as tx:
        state = await tx.read(BatchRead(
            now_ms=now_ms, keys=sorted({(u.sub, u.key) for u in jobs if u.key}),
            users=sorted({u.user_id for u in jobs}),
            slots=sorted({(u.board, u.user_id) for u in jobs}), ids=len(jobs)))
        plan = Plan(state, now_ms)
        results = [plan.update(u) for u in jobs]
        plan.write.entries = plan.entries()
        await tx.write(plan.write)
        remembered = [((u.sub, u.key), StoredResponse("f", 200, b"ok")) for u, r in
                      zip(jobs, results, strict=True) if u.key and isinstance(r, Staged)]
        await tx.remember(remembered)
    return results


def scores(entries: Iterable[Entry]) -> dict[str, int]:
    return {e.user_id: e.score for e in entries}


async def test_the_default_board_and_new_boards(store: Store) -> None:
    (default,) = await store.boards()
    assert default.spec == DEFAULT_SPEC and default.season == 1
    made = await boards(store)
    assert sorted(made) == sorted([s.id for s in SPECS] + ["default"])
    assert made["speedrun"].spec == SPECS[2] and made["speedrun"].season_started_ms == 1000
    async with store.transaction() as tx:
        assert await tx.create_board(SPECS[0], 2000, 100) == "exists"
        await tx.retitle_board("points", "All the points")
        await tx.delete_board("golf", 3000)
    after = {b.id: b for b in await store.boards()}
    assert "golf" not in after and after["points"].spec.title == "All the points"
    async with store.transaction() as tx:
        assert await tx.create_board(SPECS[1], 4000, 100) == "deleted"  # never again
        assert await tx.create_board(BoardSpec("more", "More"), 4000, len(after)) == "full"


async def test_each_operator_on_each_sort(store: Store) -> None:
    b = await boards(store)
    await write(store, ("points", "a", 5), ("points", "b", 7), ("points", "a", 3))
    await write(store, ("golf", "a", 4), ("golf", "a", 2))
    await write(store, ("speedrun", "a", 90), ("speedrun", "a", 95), ("speedrun", "a", 80))
    await write(store, ("high", "a", 90), ("high", "a", 95), ("high", "a", 80))
    await write(store, ("last", "a", 90), ("last", "a", 10))
    assert scores(await store.entries(b["points"])) == {"a": 8, "b": 7}
    assert scores(await store.entries(b["golf"])) == {"a": 6}
    assert scores(await store.entries(b["speedrun"])) == {"a": 80}  # lower is better
    assert scores(await store.entries(b["high"])) == {"a": 95}
    assert scores(await store.entries(b["last"])) == {"a": 10}
    record = await store.user_record("a", 50)
    assert len(record.ledger) == 12  # every submission is kept, better or not
    assert {e.board for e in record.entries} == {"points", "golf", "speedrun", "high", "last"}


async def test_ties_keep_the_first_achiever(store: Store) -> None:
    b = await boards(store)
    await write(store, ("high", "a", 50))
    await write(store, ("high", "b", 50))
    await write(store, ("high", "a", 50))  # equal: not better, a keeps its place
    top = await store.top(b["high"], 10)
    assert [(r.user_id, r.rank) for r in top] == [("a", 1), ("b", 2)]
    await write(store, ("last", "a", 7), ("last", "b", 7), ("last", "a", 7))
    assert [r.user_id for r in await store.top(b["last"], 10)] == ["a", "b"]


async def test_the_cap_refuses_and_writes_nothing(store: Store) -> None:
    b = await boards(store)
    first = await write(store, ("points", "a", MAX_TOTAL - 1))
    assert isinstance(first[0], Staged)
    refused, *_ = await write(store, ("points", "a", 2), key="k")
    assert not isinstance(refused, Staged)
    assert await store.find_response("a", "k") is None  # released: a retry may pass
    await write(store, ("points", "a", 1))
    assert scores(await store.entries(b["points"])) == {"a": MAX_TOTAL}
    assert [e.amount for e in (await store.user_record("a", 10)).ledger] == [1, MAX_TOTAL - 1]


async def test_reads_in_rank_order_from_the_store(store: Store) -> None:
    b = await boards(store)
    await write(store, *[("golf", f"u{i}", 10 + i % 4) for i in range(10)])
    top = await store.top(b["golf"], 4)
    assert [(r.rank, r.score) for r in top] == [(1, 10), (2, 10), (3, 10), (4, 11)]
    rest = await store.top(b["golf"], 100, after=Entry("golf", 1, top[-1].user_id, top[-1].score,
                                                       top[-1].seq))
    assert [r.user_id for r in top + rest] == [r.user_id for r in await store.top(b["golf"], 100)]
    assert await store.count(b["golf"]) == 10
    assert await store.ahead(b["golf"], top[-1].score, top[-1].seq) == 3
    ranked = await store.ranked(b["golf"], top[2].user_id)
    assert ranked is not None and ranked.rank == 3
    window = await store.top(b["golf"], 3, offset=5)
    assert [r.rank for r in window] == [6, 7, 8]


async def test_a_failed_transaction_keeps_nothing(store: Store) -> None:
    b = await boards(store)
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            state = await tx.read(BatchRead(now_ms=1, keys=[("a", "k")], users=["a"],
                                            slots=[("points", "a")], ids=1))
            plan = Plan(state, 1)
            plan.update(ScoreUpdate("a", "a", "points", 5, None, "k", "f", "s"))
            plan.write.entries = plan.entries()
            await tx.write(plan.write)
            raise RuntimeError("boom")
    assert list(await store.entries(b["points"])) == []
    assert await store.find_response("a", "k") is None


async def test_a_write_refused_at_commit_keeps_nothing_and_the_store_goes_on(
        store: Store) -> None:
    b = await boards(store)
    refused = Entry("points", 1, "a", -5, 1, "a")  # a negative total: the schema refuses it
    with pytest.raises(StatementFailed):
        async with store.transaction() as tx:
            await tx.read(BatchRead(now_ms=1, keys=[("a", "k")], users=["a"], ids=1))
            await tx.write(BatchWrite(entries=[(refused, 1, 1)]))
    assert await store.find_response("a", "k") is None
    await write(store, ("points", "a", 1), key="k")  # the same connection, and the key
    assert scores(await store.entries(b["points"])) == {"a": 1}


async def test_keys_are_claimed_remembered_and_purged(store: Store) -> None:
    await boards(store)
    await write(store, ("points", "a", 1), key="k", now_ms=1000)
    assert await store.find_response("a", "k") == StoredResponse("f", 200, b"ok")
    async with store.transaction() as tx:
        state = await tx.read(BatchRead(now_ms=9000, keys=[("a", "k"), ("b", "k")]))
    assert state.responses == {("a", "k"): StoredResponse("f", 200, b"ok"), ("b", "k"): None}
    assert await store.find_response("b", "k") is None  # that claim was not kept
    async with store.transaction() as tx:
        assert await tx.forget_responses(2000, 10) == 1
    assert await store.find_response("a", "k") is None


async def test_a_claim_waits_for_the_transaction_that_holds_the_key() -> None:
    """Two transactions with one key (two instances on PostgreSQL; SQLite has one writer,
    its transactions never overlap): the second waits for the first and then finds its
    answer, instead of failing at commit."""
    async with postgres_schema() as url:
        first, second = PostgresStore(url), PostgresStore(url)
        await first.open()
        await second.open()
        try:
            claimed, finish = asyncio.Event(), asyncio.Event()

            async def holder() -> None:
                async with first.transaction() as tx:
                    state = await tx.read(BatchRead(now_ms=0, keys=[("a", "k")]))
                    assert state.responses == {("a", "k"): None}
                    claimed.set()
                    await finish.wait()
                    await tx.remember([(("a", "k"), StoredResponse("f", 200, b"held"))])

            async def waiter() -> object:
                await claimed.wait()
                async with second.transaction() as tx:
                    state = await tx.read(BatchRead(now_ms=1, keys=[("a", "k")]))
                return state.responses[("a", "k")]

            held = asyncio.create_task(holder())
            waiting = asyncio.create_task(waiter())
            await asyncio.sleep(0.3)
            assert not waiting.done()  # blocked on the held key
            finish.set()
            await held
            assert await waiting == StoredResponse("f", 200, b"held")
        finally:
            await first.close()
            await second.close()


async def test_a_user_lock_orders_a_ban_and_a_write() -> None:
    """A ban holding the user's lock makes another instance's batch for that user wait,
    then see the ban (PostgreSQL: two connections; SQLite has one writer)."""
    async with postgres_schema() as url:
        first, second = PostgresStore(url), PostgresStore(url)
        await first.open()
        await second.open()
        try:
            banning, finish = asyncio.Event(), asyncio.Event()

            async def ban() -> None:
                async with first.transaction() as tx:
                    await tx.read(BatchRead(now_ms=0, users=["a"]))
                    await tx.ban("a", "root", 0)
                    banning.set()
                    await finish.wait()

            async def batch() -> set[str]:
                await banning.wait()
                async with second.transaction() as tx:
                    return (await tx.read(BatchRead(now_ms=1, users=["a", "b"]))).banned

            banned = asyncio.create_task(ban())
            reading = asyncio.create_task(batch())
            await asyncio.sleep(0.3)
            assert not reading.done()
            finish.set()
            await banned
            assert await reading == {"a"}
        finally:
            await first.close()
            await second.close()


async def test_tickets_are_read_and_redeemed_by_the_batch(store: Store) -> None:
    await boards(store)
    ticket = Ticket("t" * 32, "a", "demo", 10, 100, 10_000, board="points")
    async with store.transaction() as tx:
        await tx.issue_ticket(ticket, 0)
    async with store.transaction() as tx:
        state = await tx.read(BatchRead(now_ms=500, tickets=[ticket.id, "u" * 32]))
        assert state.tickets == {ticket.id: ticket}
        plan = Plan(state, 500)
        plan.write.redeemed.append((ticket.id, 500))
        await tx.write(plan.write)
    async with store.transaction() as tx:
        state = await tx.read(BatchRead(now_ms=600, tickets=[ticket.id]))
    assert state.tickets[ticket.id].redeemed_ms == 500


async def test_expired_tickets_are_purged(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.issue_ticket(Ticket("o" * 32, "a", "demo", 10, 0, 1000), 0)
        await tx.issue_ticket(Ticket("f" * 32, "a", "demo", 10, 0, 10**13), 0)
        assert await tx.forget_tickets(2000, 100) == 1
        state = await tx.read(BatchRead(now_ms=3000, tickets=["o" * 32, "f" * 32]))
    assert set(state.tickets) == {"f" * 32}


async def test_bans_hide_entries_and_unban_returns_them(store: Store) -> None:
    b = await boards(store)
    await write(store, ("points", "a", 5), ("points", "b", 6), ("high", "a", 9))
    async with store.transaction() as tx:
        assert await tx.ban("a", "root", 1)
        assert not await tx.ban("a", "root", 2)
        assert (await tx.read(BatchRead(now_ms=3, users=["a", "b"]))).banned == {"a"}
    assert await store.banned() == {"a"}
    assert scores(await store.entries(b["points"])) == {"b": 6}
    assert await store.ranked(b["points"], "a") is None
    assert await store.count(b["points"]) == 1
    assert (await store.user_record("a", 10)).banned
    async with store.transaction() as tx:
        back = await tx.unban("a", 5)
    assert {(e.board, e.score) for e in back} == {("points", 5), ("high", 9)}
    assert await store.banned() == set()


async def test_revert_by_operator(store: Store) -> None:
    b = await boards(store)
    await write(store, ("points", "a", 5), now_ms=1000)
    await write(store, ("points", "a", 7), ("high", "a", 30), ("last", "a", 30), now_ms=2000)
    await write(store, ("high", "a", 90), ("last", "a", 20), now_ms=3000)
    await write(store, ("speedrun", "a", 50), now_ms=3000)
    live = list(b.values())
    async with store.transaction() as tx:
        changed, gone, undone = await tx.revert("a", live, 3000, "revert:root", 4000)
    assert undone == 3
    assert {(e.board, e.score) for e in changed} == {("high", 30), ("last", 30)}
    assert gone == [("speedrun", "a")]  # no submission left
    assert scores(await store.entries(b["high"])) == {"a": 30}
    assert list(await store.entries(b["speedrun"])) == []
    async with store.transaction() as tx:  # one board only; reverts are never undone
        changed, gone, undone = await tx.revert("a", [b["points"]], 0, "revert:root", 5000)
    assert undone == 2 and [(e.board, e.score) for e in changed] == [("points", 0)]
    async with store.transaction() as tx:
        assert (await tx.revert("a", live, 0, "revert:root", 6000))[2] == 2  # high, last
    record = await store.user_record("a", 50)
    assert sum(1 for e in record.ledger if e.kind == "revert") == 6


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
    b = await boards(store)
    await write(store, ("points", "a", 5), now_ms=1000)
    await write(store, ("golf", "a", 7), ("high", "a", 900), now_ms=2000)  # a score: no points
    await write(store, ("points", "b", 9), now_ms=500)  # before the window
    await write(store, ("points", "c", 4), now_ms=3000)
    async with store.transaction() as tx:
        await tx.revert("c", [b["points"]], 0, "revert:root", 3500)  # not points
    assert await store.points_since(["a", "b", "c", "d"], 1000) == {"a": 12, "c": 4}


async def test_secrets_are_made_once_and_shared(store: Store) -> None:
    first = await store.secret("cursor")
    assert len(first) == 32 and await store.secret("cursor") == first
    assert await store.secret("other") != first


async def test_a_closed_store_is_unavailable(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        async with store.transaction():
            pass
    await store.open()  # and it comes back
    await store.ping()
