"""The Ranking contract, one suite for every backend (memory, Redis), against a plain
sorted model, ties included. The Redis cases run on the test Redis and fail without it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from scoreboard.model import MAX_TOTAL, UserTotal
from scoreboard.ranking.base import Ranking
from scoreboard.ranking.memory import MemoryRanking
from scoreboard.ranking.redis import BoardMissing, RedisRanking
from scoreboard.store.base import Transaction
from tests.support import REDIS, redis_prefix

BACKENDS = ["memory", "redis"]
NO_TX = cast(Transaction, None)  # memory and Redis rank without the store

users = st.sampled_from([f"u{i}" for i in range(12)])
# Small increments make equal totals (ties) common.
updates = st.lists(st.tuples(users, st.integers(1, 3)), max_size=40)


@contextlib.asynccontextmanager
async def ranking_of(backend: str) -> AsyncIterator[Ranking]:
    if backend == "memory":
        yield MemoryRanking()
        return
    async with redis_prefix() as prefix:
        client = Redis.from_url(REDIS)
        try:
            yield RedisRanking(client, prefix)
        finally:
            await client.aclose()


@pytest.fixture(params=BACKENDS)
async def ranking(request: pytest.FixtureRequest) -> AsyncIterator[Ranking]:
    async with ranking_of(request.param) as r:
        yield r


def model_order(totals: dict[str, tuple[int, int]]) -> list[tuple[str, int]]:
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
    return [(user, total) for user, (total, _) in ordered]


@pytest.mark.parametrize("backend", BACKENDS)
def test_ranking_matches_a_sorted_model(backend: str) -> None:
    @settings(max_examples=100 if backend == "memory" else 40, deadline=None)
    @given(updates, st.integers(1, 5))
    def check(steps: list[tuple[str, int]], batch: int) -> None:
        asyncio.run(run(steps, batch))

    async def run(steps: list[tuple[str, int]], batch: int) -> None:
        async with ranking_of(backend) as ranking:
            await ranking.rebuild([], set())
            model: dict[str, tuple[int, int]] = {}
            seq = 0
            pending: list[UserTotal] = []
            previewed: list[int] = []
            expected: list[int] = []
            for user, inc in steps:
                seq += 1
                total = model.get(user, (0, 0))[0] + inc
                model[user] = (total, seq)
                pending.append(UserTotal(user, total, seq, None))
                expected.append([u for u, _ in model_order(model)].index(user) + 1)
                if len(pending) == batch:
                    previewed += await ranking.ranks_after(NO_TX, pending)
                    await ranking.apply(pending)
                    pending = []
            previewed += await ranking.ranks_after(NO_TX, pending)
            await ranking.apply(pending)
            assert previewed == expected  # ranks answered before commit are the true ones
            order = model_order(model)
            top = (await ranking.top(100)).entries
            assert [(e.user_id, e.score) for e in top] == order
            assert [e.rank for e in top] == list(range(1, len(order) + 1))
            for rank, (user, total) in enumerate(order, 1):
                got = await ranking.get(user)
                assert got is not None and (got.rank, got.score) == (rank, total)
        async with ranking_of(backend) as rebuilt:
            await rebuilt.rebuild((UserTotal(u, t, s, None) for u, (t, s) in model.items()), set())
            assert [(e.user_id, e.score) for e in (await rebuilt.top(100)).entries] == order

    check()


async def test_apply_ignores_stale_and_repeated_totals(ranking: Ranking) -> None:
    await ranking.rebuild([UserTotal("a", 10, 5, "A")], set())
    assert not await ranking.apply([UserTotal("a", 4, 3, None)])  # older seq
    assert not await ranking.apply([UserTotal("a", 10, 5, None)])  # same
    assert (await ranking.top(1)).entries[0].score == 10
    assert await ranking.apply([UserTotal("a", 12, 6, None)])
    top = (await ranking.top(1)).entries
    assert (top[0].score, top[0].name) == (12, "A")


async def test_a_lower_total_with_a_newer_seq_applies(ranking: Ranking) -> None:
    """A revert lowers a total with a new ledger entry: newer wins, not larger."""
    await ranking.rebuild([UserTotal("a", 50, 1, None), UserTotal("b", 40, 2, None)], set())
    assert await ranking.apply([UserTotal("a", 30, 3, None)])
    assert [(e.user_id, e.score) for e in (await ranking.top(10)).entries] == [
        ("b", 40), ("a", 30)]


async def test_changes_below_the_watched_top_are_not_top_changes(ranking: Ranking) -> None:
    await ranking.rebuild((UserTotal(f"u{i}", 1000 - i, i + 1, None) for i in range(150)), set())
    assert not await ranking.apply([UserTotal("u140", 861, 1000, None)])
    assert await ranking.apply([UserTotal("u140", 999, 1001, None)])


async def test_ties_are_exact_at_the_largest_totals_and_seqs(ranking: Ranking) -> None:
    """Equal totals rank by who reached them first, even at 2^53 - 1 and huge seqs."""
    big_seq = 10**16 - 2
    await ranking.rebuild([
        UserTotal("late", MAX_TOTAL, big_seq, None),
        UserTotal("early", MAX_TOTAL, big_seq - 1, None),
        UserTotal("next", MAX_TOTAL - 1, 1, None),
        UserTotal("zero", 0, 7, None),
    ], set())
    top = (await ranking.top(10)).entries
    assert [(e.user_id, e.score) for e in top] == [
        ("early", MAX_TOTAL), ("late", MAX_TOTAL), ("next", MAX_TOTAL - 1), ("zero", 0)]
    late = await ranking.get("late")
    assert late is not None and (late.rank, late.score) == (2, MAX_TOTAL)


async def test_a_ban_takes_a_user_off_until_the_unban(ranking: Ranking) -> None:
    await ranking.rebuild([UserTotal("a", 9, 1, "A"), UserTotal("b", 5, 2, None),
                           UserTotal("c", 3, 3, None)], {"c"})
    assert [e.user_id for e in (await ranking.top(10)).entries] == ["a", "b"]
    assert await ranking.ban("a")
    assert not await ranking.ban("a")
    assert await ranking.get("a") is None
    b = await ranking.get("b")
    assert b is not None and b.rank == 1
    # A total committed before the ban but applied after it (another instance, late)
    # does not bring the user back; neither does a newer one.
    assert not await ranking.apply([UserTotal("a", 12, 4, None)])
    assert not await ranking.apply([UserTotal("c", 30, 5, None)])  # banned at the rebuild
    assert [e.user_id for e in (await ranking.top(10)).entries] == ["b"]
    assert await ranking.unban("a", UserTotal("a", 12, 4, None))  # back, with its total
    assert [(e.user_id, e.score) for e in (await ranking.top(10)).entries] == [("a", 12), ("b", 5)]
    assert await ranking.unban("c", UserTotal("c", 30, 5, None))
    assert [e.user_id for e in (await ranking.top(10)).entries] == ["c", "a", "b"]


async def test_names_are_kept_and_default_to_the_id(ranking: Ranking) -> None:
    await ranking.rebuild([UserTotal("a", 2, 1, "Ann <b>")], set())
    await ranking.apply([UserTotal("b", 1, 2, None), UserTotal("a", 3, 3, None)])
    top = (await ranking.top(10)).entries
    assert [(e.user_id, e.name) for e in top] == [("a", "Ann <b>"), ("b", "b")]


async def test_the_version_grows_with_each_change_only(ranking: Ranking) -> None:
    await ranking.rebuild([], set())
    v0 = (await ranking.top(1)).version
    await ranking.apply([UserTotal("a", 1, 1, None)])
    v1 = (await ranking.top(1)).version
    await ranking.apply([UserTotal("a", 1, 1, None)])  # nothing new
    assert (await ranking.top(1)).version == v1
    await ranking.ban("a")
    v2 = (await ranking.top(1)).version
    assert v0 < v1 < v2


async def test_redis_refuses_writes_once_the_board_is_lost() -> None:
    """After a flush nothing may use the empty board: a write would land on it and look
    complete, a read would show users with points as missing."""
    async with ranking_of("redis") as ranking:
        assert isinstance(ranking, RedisRanking)
        await ranking.rebuild([UserTotal("a", 3, 1, None)], set())
        assert await ranking.has_board()
        client = Redis.from_url(REDIS)
        await client.delete(*[k async for k in client.scan_iter(match=ranking.prefix + "*")])
        await client.aclose()
        assert not await ranking.has_board()
        with pytest.raises(BoardMissing):
            await ranking.apply([UserTotal("b", 1, 2, None)])
        with pytest.raises(BoardMissing):
            await ranking.ban("a")
        for read in (ranking.top(10), ranking.get("a"),
                     ranking.ranks_after(NO_TX, [UserTotal("a", 4, 5, None)])):
            with pytest.raises(BoardMissing):  # never shown partial: answered from the store
                await read
        await ranking.rebuild([UserTotal("a", 3, 1, None)], set())
        assert await ranking.apply([UserTotal("b", 1, 2, None)])


async def test_redis_rebuild_merges_with_newer_writes() -> None:
    """A rebuild from an older read of the store can't take back a newer total that
    another instance applied meanwhile."""
    async with ranking_of("redis") as ranking:
        await ranking.rebuild([], set())
        await ranking.apply([UserTotal("a", 20, 9, None)])
        before = (await ranking.top(1)).version
        await ranking.rebuild([UserTotal("a", 10, 4, None), UserTotal("b", 5, 5, None)], set())
        top = await ranking.top(10)
        assert [(e.user_id, e.score) for e in top.entries] == [("a", 20), ("b", 5)]
        assert top.version > before
