"""MemoryRanking against a plain sorted model, ties included (Hypothesis)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from scoreboard.model import UserTotal
from scoreboard.ranking.memory import MemoryRanking

users = st.sampled_from([f"u{i}" for i in range(12)])
# Small increments make equal totals (ties) common.
updates = st.lists(st.tuples(users, st.integers(1, 3)), max_size=60)


def model_order(totals: dict[str, tuple[int, int]]) -> list[tuple[str, int]]:
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
    return [(user, total) for user, (total, _) in ordered]


@settings(max_examples=200, deadline=None)
@given(updates, st.integers(1, 5))
def test_ranking_matches_a_sorted_model(steps: list[tuple[str, int]], batch: int) -> None:
    async def run() -> None:
        ranking = MemoryRanking()
        await ranking.rebuild([])
        model: dict[str, tuple[int, int]] = {}
        seq = 0
        pending: list[UserTotal] = []
        preview = ranking.preview()
        previewed: list[int] = []
        expected: list[int] = []
        for user, inc in steps:
            seq += 1
            total = model.get(user, (0, 0))[0] + inc
            model[user] = (total, seq)
            t = UserTotal(user, total, seq, None)
            pending.append(t)
            previewed.append(await preview.rank_after(t))
            expected.append([u for u, _ in model_order(model)].index(user) + 1)
            if len(pending) == batch:
                await ranking.apply(pending)
                pending, preview = [], ranking.preview()
        await ranking.apply(pending)
        assert previewed == expected  # ranks answered before commit are the true ones
        order = model_order(model)
        top = await ranking.top(100)
        assert [(e.user_id, e.score) for e in top] == order
        assert [e.rank for e in top] == list(range(1, len(order) + 1))
        for rank, (user, total) in enumerate(order, 1):
            got = await ranking.get(user)
            assert got is not None and (got.rank, got.score) == (rank, total)
        rebuilt = MemoryRanking()
        await rebuilt.rebuild(UserTotal(u, t, s, None) for u, (t, s) in model.items())
        assert [(e.user_id, e.score) for e in await rebuilt.top(100)] == order

    asyncio.run(run())


async def test_apply_ignores_stale_and_repeated_totals() -> None:
    ranking = MemoryRanking()
    await ranking.rebuild([UserTotal("a", 10, 5, "A")])
    assert not await ranking.apply([UserTotal("a", 4, 3, None)])  # older seq
    assert not await ranking.apply([UserTotal("a", 10, 5, None)])  # same
    assert (await ranking.top(1))[0].score == 10
    assert await ranking.apply([UserTotal("a", 12, 6, None)])
    top = await ranking.top(1)
    assert (top[0].score, top[0].name) == (12, "A")


async def test_changes_below_the_watched_top_are_not_top_changes() -> None:
    ranking = MemoryRanking()
    await ranking.rebuild(UserTotal(f"u{i}", 1000 - i, i + 1, None) for i in range(150))
    assert not await ranking.apply([UserTotal("u140", 861, 1000, None)])
    assert await ranking.apply([UserTotal("u140", 999, 1001, None)])
