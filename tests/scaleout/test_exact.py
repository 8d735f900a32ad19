"""Exact across instances (two processes, one PostgreSQL, one Redis): one update never
fails another, bans hold everywhere at once, detection is one view."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.scaleout.cluster import Cluster, auth, cluster_of_two, eventually, post
from tests.support import ServerProcess


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_of_two(tmp_path_factory.mktemp("exact"), {
        "SCOREBOARD_RATE_LIMIT": "100000/minute",
        "SCOREBOARD_MAX_INCREMENT": "1000",
    }) as made:
        yield made


class Bystanders:
    """Users writing on both instances meanwhile, so that they share group-commit
    batches with whatever a test does: every one of their writes must be a 200."""

    def __init__(self, cluster: Cluster, client: httpx.AsyncClient, count: int = 12) -> None:
        self._servers = (cluster.a, cluster.b)
        self._client = client
        self._users = [f"bystander-{i}" for i in range(count)]
        self._stop = asyncio.Event()
        self.statuses: Counter[int] = Counter()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Bystanders:
        self._tasks = [asyncio.create_task(self._write(i, user))
                       for i, user in enumerate(self._users)]
        await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _write(self, i: int, user: str) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            r = await post(self._client, self._servers[(i + n) % 2], user, 1)
            self.statuses[r.status_code] += 1


async def test_the_same_key_on_two_instances_at_once(cluster: Cluster) -> None:
    """One applies; each other copy is a 409 (in flight) or the replay; every other
    user's update in the same batches is a 200 (once, a key race failed whole batches:
    17 bystander 503s in 1,698 writes)."""
    rounds, copies = 40, 3
    async with httpx.AsyncClient(timeout=20) as client, Bystanders(cluster, client) as others:
        for n in range(rounds):
            key = f"race-{n}"
            answers = await asyncio.gather(*(
                post(client, server, "racer", 5, key=key)
                for server in (cluster.a, cluster.b) for _ in range(copies)))
            applied = [r for r in answers
                       if r.status_code == 200 and "idempotent-replayed" not in r.headers]
            replayed = [r for r in answers if r.headers.get("idempotent-replayed") == "true"]
            in_flight = [r for r in answers if r.status_code == 409]
            assert len(applied) == 1, [(r.status_code, r.text) for r in answers]
            assert len(applied) + len(replayed) + len(in_flight) == 2 * copies
            assert all(r.content == applied[0].content for r in replayed)
    assert set(others.statuses) == {200}, others.statuses
    assert sum(others.statuses.values()) > 100
    assert cluster.totals()["racer"] == 5 * rounds


async def test_a_ban_holds_on_every_instance_before_its_200(cluster: Cluster) -> None:
    """Writes for the user on both instances until the ban: any sent after the ban's 200
    is a 403 wherever it lands, and the user never comes back onto either board."""
    statuses: list[tuple[float, int]] = []  # (sent at, status)
    stop = asyncio.Event()

    async def villain(client: httpx.AsyncClient, server: ServerProcess) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            r = await post(client, server, "villain", 100)
            statuses.append((sent, r.status_code))

    async with httpx.AsyncClient(timeout=20) as client, Bystanders(cluster, client):
        writers = [asyncio.create_task(villain(client, server))
                   for server in (cluster.a, cluster.b) for _ in range(3)]
        await asyncio.sleep(0.5)
        banned = await client.post(f"{cluster.a.url}/admin/users/villain/ban",
                                   headers=auth("root", scope="scoreboard:admin"))
        assert banned.status_code == 200, banned.text
        answered = time.monotonic()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*writers)
        after = [status for sent, status in statuses if sent > answered]
        assert after and set(after) == {403}, Counter(after)
        assert any(status == 200 for sent, status in statuses if sent < answered)
        for _ in range(10):  # and it stays off, on both
            for server in (cluster.a, cluster.b):
                board = (await client.get(f"{server.url}/scores?limit=100")).json()
                assert "villain" not in {row["user_id"] for row in board}
                assert (await client.get(f"{server.url}/users/villain")).status_code == 404
            await asyncio.sleep(0.1)


@pytest.fixture
def quiet_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own: velocity compares a user with the population the instance
    saw write in the last minute, which must be only this test's."""
    with cluster_of_two(tmp_path, {"SCOREBOARD_RATE_LIMIT": "100000/minute",
                                   "SCOREBOARD_MAX_INCREMENT": "1000"}) as made:
        yield made


async def test_detection_is_one_view(quiet_cluster: Cluster) -> None:
    """A user farming points on both instances, under the threshold on each: velocity
    counts all of them, and /admin/suspicious answers the same on both."""
    cluster = quiet_cluster
    admin = auth("root", scope="scoreboard:admin")
    async with httpx.AsyncClient(timeout=20) as client:
        for i in range(20):  # the population: small, steady players
            assert (await post(client, (cluster.a, cluster.b)[i % 2], f"player-{i}", 5)
                    ).status_code == 200
        for server in (cluster.a, cluster.b):  # 300 points on each: 600 in the minute
            for _ in range(3):
                assert (await post(client, server, "farmer", 100)).status_code == 200

        async def flagged_on_both() -> bool:
            views = [(await client.get(f"{s.url}/admin/suspicious", headers=admin)).json()
                     for s in (cluster.a, cluster.b)]
            return all(any(f["user_id"] == "farmer" and "velocity" in f["reasons"] for f in v)
                       for v in views)

        await eventually(flagged_on_both, 5.0, every=0.2)
        a, b = [(await client.get(f"{s.url}/admin/suspicious", headers=admin)).json()
                for s in (cluster.a, cluster.b)]
        assert a == b
