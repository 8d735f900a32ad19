"""Two server processes on one PostgreSQL and one Redis: one board.

Redis is a redis-server of this module's own, so it can be killed and flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.live.sse import stream
from tests.scaleout.cluster import Cluster, auth, cluster_of_two, eventually, post
from tests.support import ServerProcess

RATE = 30  # per user per minute, counted across instances


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_of_two(tmp_path_factory.mktemp("cluster"), {
        "SCOREBOARD_RATE_LIMIT": f"{RATE}/minute",
        "SCOREBOARD_MAX_INCREMENT": "1000000",
    }) as made:
        yield made


async def test_a_write_on_a_shows_on_b_read_and_stream_within_a_second(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as client, \
            httpx.AsyncClient(base_url=cluster.b.url, timeout=10) as on_b, \
            stream(on_b) as events:
        await events.next()  # the snapshot on connect
        started = time.monotonic()
        r = await post(client, cluster.a, "crossing", 999_000)
        assert r.status_code == 200 and r.json()["rank"] == 1
        event = await events.until(
            lambda e: any(row["user_id"] == "crossing" for row in e.data), timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert event.data[0] == {"rank": 1, "user_id": "crossing", "name": "crossing",
                                 "score": 999_000}

        async def on_b_board() -> bool:
            rows = (await on_b.get("/scores")).json()
            return bool(rows) and rows[0]["user_id"] == "crossing"

        assert await eventually(on_b_board, 1.0) < 1.0
        ranked = (await on_b.get("/users/crossing")).json()
        assert (ranked["rank"], ranked["score"]) == (1, 999_000)


async def test_the_rate_limit_counts_across_instances(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        codes = [(await post(client, (cluster.a, cluster.b)[i % 2], "limited", 1)).status_code
                 for i in range(RATE + 2)]
    assert codes == [200] * RATE + [429, 429]


async def test_an_idempotency_key_used_on_a_replays_on_b(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        first = await post(client, cluster.a, "keyed", 5, key="k-1")
        again = await post(client, cluster.b, "keyed", 5, key="k-1")
        other = await post(client, cluster.b, "keyed", 6, key="k-1")
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422
    assert cluster.totals()["keyed"] == 5


async def test_a_ban_on_a_holds_on_b(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await post(client, cluster.b, "cheater", 50)).status_code == 200
        admin = auth("root", scope="scoreboard:admin")
        banned = await client.post(f"{cluster.a.url}/admin/users/cheater/ban", headers=admin)
        assert banned.status_code == 200, banned.text

        async def refused_on_b() -> bool:
            return (await post(client, cluster.b, "cheater", 1)).status_code == 403

        await eventually(refused_on_b, 5.0, every=0.4)  # under the rate limit
        assert (await client.get(f"{cluster.b.url}/users/cheater")).status_code == 404


@pytest.mark.parametrize("fault", ["killed", "flushed"])
async def test_redis_lost_mid_run_degrades_then_converges(cluster: Cluster, fault: str) -> None:
    """Writes on both instances while Redis goes away: every acknowledged write is kept,
    readiness stays 200 ("redis": "down"), and once Redis is back B's board and stream
    equal the database within 5 s."""
    users = [f"{fault}-{i}" for i in range(8)]
    acked: dict[str, int] = dict.fromkeys(users, 0)
    stop = asyncio.Event()

    async def writer(client: httpx.AsyncClient, server: ServerProcess, user: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            r = await post(client, server, user, 1, key=f"{user}-{server.port}-{n}")
            assert r.status_code == 200, r.text  # Redis down degrades; it never refuses
            acked[user] += 1
            await asyncio.sleep(0.15)  # under the rate limit

    async with httpx.AsyncClient(timeout=10) as client, \
            httpx.AsyncClient(base_url=cluster.b.url, timeout=10) as on_b, \
            stream(on_b) as events:
        writers = [asyncio.create_task(writer(client, (cluster.a, cluster.b)[i % 2], user))
                   for i, user in enumerate(users)]
        await asyncio.sleep(0.5)
        if fault == "killed":
            cluster.redis.kill()
            await asyncio.sleep(1.0)
            ready = (await client.get(f"{cluster.b.url}/readyz")).json()
            assert ready == {"status": "ready", "store": "up", "redis": "down"}
            assert "scoreboard_redis_up 0.0" in (await on_b.get("/metrics")).text
            board = (await on_b.get("/scores?limit=100")).json()  # read from the store
            assert {row["user_id"] for row in board} >= set(users)
            cluster.redis.start()  # back, empty
        else:
            import redis
            redis.Redis.from_url(cluster.redis.url).flushall()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*writers)

        truth = cluster.totals()
        assert all(truth[u] == acked[u] for u in users), (truth, acked)  # kept, once
        expected = cluster.board()

        async def board_converged() -> bool:
            board = (await on_b.get("/scores?limit=100")).json()
            return [(row["user_id"], row["score"]) for row in board] == expected

        latest: list[Any] = []

        async def stream_converged() -> bool:
            nonlocal latest
            with contextlib.suppress(TimeoutError):
                while True:
                    latest = (await events.next(timeout=0.01)).data
            return [(row["user_id"], row["score"]) for row in latest] == expected[:10]

        try:
            seconds = await eventually(board_converged, 5.0)
        except AssertionError:
            print("EXPECTED", expected[:12])
            print("BOARD", (await on_b.get("/scores?limit=12")).json())
            print("\n".join(cluster.b.log_lines()[-30:]))
            raise
        await eventually(stream_converged, 5.0)
        ready = (await client.get(f"{cluster.b.url}/readyz")).json()
        assert ready["redis"] == "up"
        assert "scoreboard_redis_up 1.0" in (await on_b.get("/metrics")).text
        print(f"{fault}: converged {seconds:.2f} s after the last write")


async def test_two_instances_serve_the_same_boards(cluster: Cluster) -> None:
    """A board made on A is served by B at once: its writes, reads, pages and stream;
    deleted on B, it is gone from A."""
    admin = auth("root", scope="scoreboard:admin")
    async with httpx.AsyncClient(timeout=10) as client, \
            httpx.AsyncClient(base_url=cluster.a.url, timeout=10) as on_a:
        made = await client.put(f"{cluster.a.url}/admin/boards/laps", headers=admin,
                                json={"title": "Laps", "sort": "asc", "operator": "best"})
        assert made.status_code == 201, made.text

        async def on_b() -> bool:
            boards = (await client.get(f"{cluster.b.url}/boards")).json()
            return "laps" in {b["id"] for b in boards}

        await eventually(on_b, 1.0)
        async with stream(on_a, path="/boards/laps/stream") as events:
            assert (await events.next()).data == []
            for user, time_ms in (("ann", 61_000), ("ben", 59_500), ("ann", 58_000)):
                r = await client.post(f"{cluster.b.url}/boards/laps/score", headers=auth(user),
                                      json={"user_id": user, "score": time_ms})
                assert r.status_code == 200, r.text
            event = await events.until(lambda e: e.data and e.data[0]["score"] == 58_000)
            assert [(e["user_id"], e["score"]) for e in event.data] == [
                ("ann", 58_000), ("ben", 59_500)]
        for server in (cluster.a, cluster.b):
            ranks = (await client.post(f"{server.url}/boards/laps/ranks",
                                       json={"user_ids": ["ben", "ann"]})).json()
            assert [(e["user_id"], e["rank"]) for e in ranks] == [("ann", 1), ("ben", 2)]
            page = await client.get(f"{server.url}/boards/laps/scores?limit=1")
            assert page.json()[0]["user_id"] == "ann" and "link" in page.headers
        deleted = await client.delete(f"{cluster.b.url}/admin/boards/laps", headers=admin)
        assert deleted.status_code == 204

        async def gone_on_a() -> bool:
            return (await client.get(f"{cluster.a.url}/boards/laps")).status_code == 404

        await eventually(gone_on_a, 2.0)
