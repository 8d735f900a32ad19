"""The Ranking contract, one suite for every backend, over several boards, both sorts and
all three operators, against a plain sorted model (ties included).

Backends: the memory ranking; Redis; and the failover ranking both ways — with Redis up
(it must be Redis) and with Redis away (it must answer the same from the store, which
the harness writes as the writer would). The Redis cases run on the test Redis and
fail without it; the store is SQLite.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from scoreboard.model import MAX_TOTAL, Entry
from scoreboard.ranking.base import key_of
from scoreboard.ranking.redis import BoardMissing, RedisRanking
from tests.contract.rankings import BACKENDS, BOARDS, Harness, define, harness
from tests.support import REDIS


@dataclass
class Model:
    """Each board's entries as the operators make them: (score, seq) per user."""

    entries: dict[str, dict[str, tuple[int, int]]]

    def write(self, board_id: str, user: str, amount: int, seq: int) -> tuple[int, int]:
        spec = BOARDS[board_id].spec
        held = self.entries.setdefault(board_id, {}).get(user)
        if spec.operator == "increment":
            new = ((held[0] if held else 0) + amount, seq)
        elif spec.operator == "best":
            new = (amount, seq) if held is None or spec.better(amount, held[0]) else held
        else:
            new = (amount, seq) if held is None or amount != held[0] else held
        self.entries[board_id][user] = new
        return new

    def order(self, board_id: str) -> list[tuple[str, int]]:
        sort = BOARDS[board_id].spec.sort
        rows = sorted(self.entries.get(board_id, {}).items(),
                      key=lambda kv: key_of(sort, kv[1][0], kv[1][1], kv[0]))
        return [(user, score) for user, (score, _) in rows]


users = st.sampled_from([f"u{i}" for i in range(10)])
# Small amounts make equal scores (ties) common.
writes = st.lists(st.tuples(st.sampled_from(sorted(BOARDS)), users, st.integers(0, 4)),
                  max_size=40)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_board_matches_a_sorted_model(backend: str, tmp_path: Path) -> None:
    @settings(max_examples={"memory": 100}.get(backend, 25), deadline=None)
    @given(writes, st.integers(1, 5))
    def check(steps: list[tuple[str, str, int]], batch: int) -> None:
        asyncio.run(run(steps, 1 if backend == "degraded" else batch))

    async def run(steps: list[tuple[str, str, int]], batch: int) -> None:
        async with harness(backend, tmp_path) as h:
            if backend == "degraded":
                h.degraded = True  # type: ignore[attr-defined]
            await define(h, *BOARDS)
            model = Model({})
            pending: list[Entry] = []
            previewed: list[int] = []
            expected: list[int] = []
            for seq, (board_id, user, amount) in enumerate(steps, 1):
                score, reached = model.write(board_id, user, amount, seq)
                pending.append(Entry(board_id, 1, user, score, reached))
                expected.append([u for u, _ in model.order(board_id)].index(user) + 1)
                if len(pending) == batch:
                    previewed += (await h.commit(pending))[0]
                    pending = []
            if pending:
                previewed += (await h.commit(pending))[0]
            assert previewed == expected  # ranks answered before commit are the true ones
            for board_id in BOARDS:
                order = model.order(board_id)
                top = (await h.ranking.top(board_id, 100)).entries
                assert [(e.user_id, e.score) for e in top] == order, board_id
                assert [e.rank for e in top] == list(range(1, len(order) + 1))
                assert await h.ranking.count(board_id) == len(order)
                for rank, (user, score) in enumerate(order, 1):
                    got = await h.ranking.get(board_id, user)
                    assert got is not None and (got.rank, got.score) == (rank, score)
                # Paging three at a time meets every entry once, in order.
                paged: list[tuple[str, int]] = []
                after = None
                while True:
                    page = await h.ranking.top(board_id, 3, after)
                    paged += [(e.user_id, e.score) for e in page.entries]
                    if page.next_after is None:
                        break
                    after = page.next_after
                assert paged == order

    check()


async def test_apply_ignores_stale_and_repeated_entries(h: Harness) -> None:
    await define(h, "inc")
    await h.commit([Entry("inc", 1, "a", 10, 5, "A")])
    await h.commit([Entry("inc", 1, "a", 4, 3)])  # older seq
    await h.commit([Entry("inc", 1, "a", 10, 5)])  # the same
    assert (await h.ranking.top("inc", 1)).entries[0].score == 10
    await h.commit([Entry("inc", 1, "a", 12, 6)])
    top = (await h.ranking.top("inc", 1)).entries
    assert (top[0].score, top[0].name) == (12, "A")


async def test_tops_read_from_the_store_never_number_an_older_read_higher(
        tmp_path: Path) -> None:
    """Redis away: two reads of a board's top at once, on two pooled connections, may
    reach the store in either order; a higher version must never hold the older read
    (a stream showed a score going down, 926 -> 924, in a fault run)."""
    async with harness("failover", tmp_path) as h:
        h.degraded = True  # type: ignore[attr-defined]
        await define(h, "inc")
        await h.commit([Entry("inc", 1, "a", 924, 1)])
        assert h.store is not None
        store_top, first_in, go_on = h.store.top, asyncio.Event(), asyncio.Event()

        async def held_first(*args: Any, **kwargs: Any) -> Any:
            if not first_in.is_set():  # the first read is held before it reads
                first_in.set()
                await go_on.wait()
            return await store_top(*args, **kwargs)

        h.store.top = held_first  # type: ignore[method-assign]
        first = asyncio.create_task(h.ranking.top("inc", 10))
        await first_in.wait()
        second = asyncio.create_task(h.ranking.top("inc", 10))
        await asyncio.sleep(0.05)  # the second reads now, unless it waits for the first
        await h.commit([Entry("inc", 1, "a", 926, 2)])
        go_on.set()
        tops = sorted(await asyncio.gather(first, second), key=lambda top: top.version)
        assert [top.entries[0].score for top in tops] in ([924, 926], [926, 926]), tops


async def test_a_lower_score_with_a_newer_seq_applies(h: Harness) -> None:
    """A revert lowers a total with a new ledger row: newer wins, not larger."""
    await define(h, "inc")
    await h.commit([Entry("inc", 1, "a", 50, 1), Entry("inc", 1, "b", 40, 2)])
    await h.commit([Entry("inc", 1, "a", 30, 3)])
    assert [(e.user_id, e.score) for e in (await h.ranking.top("inc", 10)).entries] == [
        ("b", 40), ("a", 30)]


async def test_changes_below_the_watched_top_are_not_top_changes(mirror: Harness) -> None:
    h = mirror
    await define(h, "inc")
    await h.commit([Entry("inc", 1, f"u{i}", 1000 - i, i + 1) for i in range(150)])
    assert (await h.commit([Entry("inc", 1, "u140", 861, 1000)]))[1] == set()
    assert (await h.commit([Entry("inc", 1, "u140", 999, 1001)]))[1] == {"inc"}


async def test_ties_are_exact_at_the_largest_scores_and_seqs(h: Harness) -> None:
    """Equal scores rank by who reached them first, even at 2^53 - 1 and huge seqs, on
    a desc and an asc board."""
    await define(h, "inc", "golf")
    big = 10**16 - 2
    for board_id in ("inc", "golf"):
        await h.commit([Entry(board_id, 1, "late", MAX_TOTAL, big), Entry(board_id, 1, "early",
                        MAX_TOTAL, big - 1), Entry(board_id, 1, "next", MAX_TOTAL - 1, 1),
                        Entry(board_id, 1, "zero", 0, 7)])
    top = (await h.ranking.top("inc", 10)).entries
    assert [(e.user_id, e.score) for e in top] == [
        ("early", MAX_TOTAL), ("late", MAX_TOTAL), ("next", MAX_TOTAL - 1), ("zero", 0)]
    golf = (await h.ranking.top("golf", 10)).entries
    assert [e.user_id for e in golf] == ["zero", "next", "early", "late"]
    late = await h.ranking.get("inc", "late")
    assert late is not None and (late.rank, late.score) == (2, MAX_TOTAL)


async def test_around_me_slides_at_the_ends(h: Harness) -> None:
    await define(h, "inc")
    await h.commit([Entry("inc", 1, f"u{i}", 100 - i, i + 1) for i in range(20)])

    async def window(user: str, above: int, below: int) -> list[int]:
        found = await h.ranking.around("inc", user, above, below)
        assert found is not None
        return [e.rank for e in found]

    assert await window("u9", 2, 2) == [8, 9, 10, 11, 12]
    assert await window("u0", 2, 2) == [1, 2, 3, 4, 5]  # slid down at the top
    assert await window("u19", 2, 2) == [16, 17, 18, 19, 20]  # slid up at the bottom
    assert await window("u1", 5, 0) == [1, 2, 3, 4, 5, 6]
    assert await window("u5", 0, 0) == [6]
    assert await window("u3", 50, 50) == list(range(1, 21))  # the whole board
    assert await h.ranking.around("inc", "nobody", 2, 2) is None


async def test_ranks_of_a_list_of_users(h: Harness) -> None:
    await define(h, "fast")
    await h.commit([Entry("fast", 1, "a", 30, 1), Entry("fast", 1, "b", 10, 2),
                    Entry("fast", 1, "c", 20, 3), Entry("fast", 1, "d", 10, 4)])
    found = await h.ranking.ranks("fast", ["c", "nobody", "d", "c", "b"])
    assert [(e.user_id, e.rank, e.score) for e in found] == [("b", 1, 10), ("d", 2, 10),
                                                             ("c", 3, 20)]


async def test_boards_are_apart(h: Harness) -> None:
    await define(h, "inc", "last")
    await h.commit([Entry("inc", 1, "a", 5, 1), Entry("last", 1, "a", 2, 2),
                    Entry("last", 1, "b", 9, 3)])
    assert [e.user_id for e in (await h.ranking.top("inc", 10)).entries] == ["a"]
    assert [e.user_id for e in (await h.ranking.top("last", 10)).entries] == ["b", "a"]
    assert await h.ranking.get("inc", "b") is None


async def test_a_ban_takes_a_user_off_every_board_until_the_unban(h: Harness) -> None:
    await define(h, "inc", "fast", banned={"c"})
    await h.commit([Entry("inc", 1, "a", 9, 1, "A"), Entry("inc", 1, "b", 5, 2),
                    Entry("fast", 1, "a", 40, 3), Entry("fast", 1, "b", 50, 4)])
    await h.ranking.ban("a")
    if h.store is not None:
        async with h.store.transaction() as tx:
            await tx.ban("a", "root", 0)
    assert await h.ranking.get("inc", "a") is None and await h.ranking.get("fast", "a") is None
    b = await h.ranking.get("inc", "b")
    assert b is not None and b.rank == 1
    # An entry committed before the ban but applied after it (another instance, late)
    # does not bring the user back; neither does a newer one, nor one of a user banned
    # before the rebuild.
    await h.commit([Entry("inc", 1, "a", 12, 5), Entry("inc", 1, "c", 30, 6)])
    assert [e.user_id for e in (await h.ranking.top("inc", 10)).entries] == ["b"]
    if h.store is not None:
        async with h.store.transaction() as tx:
            await tx.unban("a", 0)
    await h.ranking.unban("a", [Entry("inc", 1, "a", 12, 5), Entry("fast", 1, "a", 40, 3)])
    assert [(e.user_id, e.score) for e in (await h.ranking.top("inc", 10)).entries] == [
        ("a", 12), ("b", 5)]
    assert [e.user_id for e in (await h.ranking.top("fast", 10)).entries] == ["a", "b"]


async def test_remove_and_drop(h: Harness) -> None:
    await define(h, "last", "inc")
    await h.commit([Entry("last", 1, "a", 3, 1), Entry("last", 1, "b", 4, 2), Entry("inc", 1, "a", 1, 3)])
    if h.store is not None:
        async with h.store.transaction() as tx:
            await tx.run("DELETE FROM entries WHERE board = 'last' AND user_id = 'b'", ())  # type: ignore[attr-defined]
    await h.ranking.remove("last", "b")
    assert [e.user_id for e in (await h.ranking.top("last", 10)).entries] == ["a"]
    await h.ranking.drop("last")
    assert (await h.ranking.top("last", 10)).entries == []
    assert [e.user_id for e in (await h.ranking.top("inc", 10)).entries] == ["a"]


async def test_the_version_grows_with_each_change_only(mirror: Harness) -> None:
    h = mirror
    await define(h, "inc")
    v0 = (await h.ranking.top("inc", 1)).version
    await h.commit([Entry("inc", 1, "a", 1, 1)])
    v1 = (await h.ranking.top("inc", 1)).version
    await h.commit([Entry("inc", 1, "a", 1, 1)])  # nothing new
    assert (await h.ranking.top("inc", 1)).version == v1
    await h.ranking.ban("a")
    v2 = (await h.ranking.top("inc", 1)).version
    assert v0 < v1 < v2


async def test_redis_refuses_once_a_board_is_lost(tmp_path: Path) -> None:
    """After a flush nothing may use the empty board: a write would land on it and look
    complete, a read would show users with points as missing."""
    async with harness("redis", tmp_path) as h:
        ranking = h.ranking
        assert isinstance(ranking, RedisRanking)
        await define(h, "inc")
        await h.commit([Entry("inc", 1, "a", 3, 1)])
        assert await ranking.has_boards()
        client = Redis.from_url(REDIS)
        await client.delete(*[k async for k in client.scan_iter(match=ranking.prefix + "*")])
        await client.aclose()
        assert not await ranking.has_boards()
        with pytest.raises(BoardMissing):
            await ranking.apply([Entry("inc", 1, "b", 1, 2)])
        with pytest.raises(BoardMissing):
            await ranking.ban("a")
        reads: list[Any] = [ranking.top("inc", 10), ranking.get("inc", "a"),
                            ranking.around("inc", "a", 1, 1), ranking.ranks("inc", ["a"]),
                            ranking.count("inc"),
                            ranking.ranks_after(None, BOARDS, [Entry("inc", 1, "a", 4, 5)])]  # type: ignore[arg-type]
        for read in reads:
            with pytest.raises(BoardMissing):  # never shown partial: answered from the store
                await read
        await ranking.rebuild(BOARDS["inc"], [Entry("inc", 1, "a", 3, 1)], set())
        assert await ranking.apply([Entry("inc", 1, "b", 1, 2)]) == {"inc"}


async def test_redis_rebuild_merges_with_newer_writes(tmp_path: Path) -> None:
    """A rebuild from an older read of the store can't take back a newer entry that
    another instance applied meanwhile."""
    async with harness("redis", tmp_path) as h:
        await define(h, "inc")
        await h.ranking.apply([Entry("inc", 1, "a", 20, 9)])
        before = (await h.ranking.top("inc", 1)).version
        await h.ranking.rebuild(BOARDS["inc"], [Entry("inc", 1, "a", 10, 4),
                                                Entry("inc", 1, "b", 5, 5)], set())
        top = await h.ranking.top("inc", 10)
        assert [(e.user_id, e.score) for e in top.entries] == [("a", 20), ("b", 5)]
        assert top.version > before
