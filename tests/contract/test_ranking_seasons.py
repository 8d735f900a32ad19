"""The Ranking contract for seasons, on every backend (memory, Redis, failover up and
degraded): a new season starts empty with a higher version, a closed season's entries
applied late are dropped, an entry of a newer season moves the board on by itself,
and the other boards are untouched."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from scoreboard.model import Entry
from scoreboard.ranking.redis import RedisRanking
from tests.contract.rankings import Harness, define, harness
from tests.support import REDIS


def users(top: object) -> list[tuple[str, int]]:
    return [(e.user_id, e.score) for e in top.entries]  # type: ignore[attr-defined]


async def test_a_new_season_starts_empty(h: Harness) -> None:
    await define(h, "inc", "fast")
    await h.commit([Entry("inc", 1, "a", 5, 1), Entry("inc", 1, "b", 3, 2),
                    Entry("fast", 1, "a", 40, 3)])
    before = await h.ranking.top("inc", 10)
    season = await h.reset("inc", 100)
    assert await h.ranking.new_season(season)
    assert not await h.ranking.new_season(season)  # already
    after = await h.ranking.top("inc", 10)
    assert after.entries == [] and after.version > before.version
    assert await h.ranking.count("inc") == 0 and await h.ranking.get("inc", "a") is None
    assert users(await h.ranking.top("fast", 10)) == [("a", 40)]
    # Another instance applies a write of the closed season late: dropped.
    await h.ranking.apply([Entry("inc", 1, "c", 9, 4)])
    assert (await h.ranking.top("inc", 10)).entries == []
    assert (await h.commit([Entry("inc", 2, "b", 1, 5)]))[0] == [1]
    assert (await h.commit([Entry("inc", 2, "d", 4, 6)]))[0] == [1]
    assert users(await h.ranking.top("inc", 10)) == [("d", 4), ("b", 1)]
    page = await h.ranking.top("inc", 1)
    assert page.next_after is not None and page.next_after.season == 2


async def test_an_entry_of_a_newer_season_moves_the_board_on(mirror: Harness) -> None:
    """Another instance reset the board and wrote to the new season before this one
    heard of it: the entry itself says the season began."""
    h = mirror
    await define(h, "inc")
    await h.commit([Entry("inc", 1, "a", 5, 1)])
    before = (await h.ranking.top("inc", 10)).version
    await h.reset("inc", 100)
    ranks, changed = await h.commit([Entry("inc", 2, "b", 2, 7)])
    assert ranks == [1] and changed == {"inc"}
    top = await h.ranking.top("inc", 10)
    assert users(top) == [("b", 2)] and top.version > before


async def test_redis_lets_a_closed_season_go(tmp_path: Path) -> None:
    """Once its standings are stored, a closed season's keys go; a late write of it then
    neither fails nor brings them back."""
    async with harness("redis", tmp_path) as h:
        ranking = h.ranking
        assert isinstance(ranking, RedisRanking)
        await define(h, "inc")
        await h.commit([Entry("inc", 1, "a", 5, 1)])
        await ranking.new_season(await h.reset("inc", 100))
        client = Redis.from_url(REDIS)
        try:
            keys = {k.decode() async for k in client.scan_iter(match=ranking.prefix + "b:inc:1:*")}
            assert keys == {ranking.prefix + f"b:inc:1:{k}" for k in ("order", "members", "built")}
            await ranking.close_season("inc", 1)
            await ranking.close_season("inc", 2)  # the current season: never closed
            assert await ranking.apply([Entry("inc", 1, "z", 9, 9)]) == set()
            keys = {k.decode() async for k in client.scan_iter(match=ranking.prefix + "b:inc:1:*")}
            assert keys == {ranking.prefix + "b:inc:1:built"}
            assert await client.get(ranking.prefix + "b:inc:1:built") == b"closed"
            assert 0 < await client.ttl(ranking.prefix + "b:inc:1:built") <= 86400
            assert await client.get(ranking.prefix + "b:inc:2:built") == b"1"
        finally:
            await client.aclose()
