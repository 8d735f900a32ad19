"""A scheduled reset on real servers under libfaketime (Debian's ``faketime``), started a
few seconds before the hour: the reset commits once, on time, with every write
acknowledged before it in the old season and every acknowledged write in exactly one
season — on one embedded server, and on two instances of one PostgreSQL + Redis that
are both due for the same reset while users write to both."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt

from tests.scaleout.cluster import Cluster, cluster_of_two
from tests.support import SECRET, ServerProcess

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
LEAD = 6.0  # seconds of writes before the boundary
AFTER = 3.0  # and after it


@dataclass
class FakeClock:
    """Every server of a test runs ``offset`` whole seconds ahead of the real clock
    (libfaketime's relative offset: the same for each process, so they agree)."""

    boundary: int  # the hour the servers are due to reset at, in epoch seconds
    offset: int

    @classmethod
    def before_the_hour(cls) -> FakeClock:
        now = time.time()
        boundary = (int(now + LEAD) // 3600 + 1) * 3600
        return cls(boundary, int(boundary - LEAD - now))

    @property
    def env(self) -> dict[str, str]:
        # Fails, not skips, without the library: the Makefile installs it.
        assert Path(LIBFAKETIME).exists(), "apt install faketime"
        return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": f"+{self.offset}"}

    def now(self) -> float:
        return time.time() + self.offset

    def token(self, sub: str, **claims: Any) -> dict[str, str]:
        now = int(self.now())
        token = jwt.encode({"sub": sub, "iat": now, "exp": now + 600, **claims}, SECRET,
                           algorithm="HS256")
        return {"Authorization": f"Bearer {token}"}

    def rfc3339(self, at: float) -> str:
        return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")


@dataclass
class Writes:
    """Each user writes 1 point at a time, one write after the other, so the score in an
    answer says which season took the write: 1, 2, ... k, then 1, 2, ... again."""

    acked_at: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)

    async def run(self, clock: FakeClock, urls: list[str], users: list[str],
                  until: float) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.gather(*(self._user(client, clock, urls[i % len(urls)], user, until)
                                   for i, user in enumerate(users)))

    async def _user(self, client: httpx.AsyncClient, clock: FakeClock, url: str, user: str,
                    until: float) -> None:
        acked = self.acked_at.setdefault(user, [])
        n = 0
        while clock.now() < until:
            n += 1
            r = await client.post(f"{url}/boards/hourly/score", headers=clock.token(user) | {
                "Idempotency-Key": f"{user}-{n}"}, json={"user_id": user, "increment": 1})
            self.statuses[r.status_code] += 1
            if r.status_code == 200:
                acked.append((clock.now(), r.json()["score"]))
            await asyncio.sleep(0.01)

    def seasons_of(self, user: str) -> tuple[int, int]:
        """How many of the user's writes each season took, from the answers alone."""
        scores = [score for _, score in self.acked_at[user]]
        split = next((i for i in range(1, len(scores)) if scores[i] <= scores[i - 1]),
                     len(scores))
        old, new = scores[:split], scores[split:]
        assert old == list(range(1, len(old) + 1)), scores  # each write once, in order
        assert new == list(range(1, len(new) + 1)), scores
        return len(old), len(new)


async def read(client: httpx.AsyncClient, url: str) -> Any:
    r = await client.get(url)
    assert r.status_code == 200, r.text
    return r.json()


async def make_hourly(client: httpx.AsyncClient, clock: FakeClock, url: str) -> None:
    r = await client.put(f"{url}/admin/boards/hourly", headers=clock.token(
        "root", scope="scoreboard:admin"), json={"title": "Hourly", "reset": "hour",
                                                 "timezone": "UTC"})
    assert r.status_code in (200, 201), r.text
    board = await read(client, f"{url}/boards/hourly")
    assert board["next_reset_at"] == clock.rfc3339(clock.boundary)


@contextlib.asynccontextmanager
async def season_events(client: httpx.AsyncClient, clock: FakeClock,
                        url: str) -> AsyncIterator[list[tuple[float, dict[str, Any]]]]:
    """The ``season`` events of the board's stream, each with when it arrived."""
    seen: list[tuple[float, dict[str, Any]]] = []

    async def listen() -> None:
        async with client.stream("GET", f"{url}/boards/hourly/stream") as response:
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "season":
                    seen.append((clock.now(), json.loads(line[5:])))
                elif not line:
                    event = ""

    task = asyncio.create_task(listen())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def check_one_reset(client: httpx.AsyncClient, clock: FakeClock, url: str,
                          writes: Writes, users: list[str]) -> None:
    at = clock.rfc3339(clock.boundary)
    seasons = await read(client, f"{url}/boards/hourly/seasons")
    assert [(s["season"], s["ended_at"]) for s in seasons] == [(2, None), (1, at)]
    assert seasons[0]["started_at"] == at  # ends at the scheduled time, not when it ran
    final = {e["user_id"]: e["score"] for e in await read(
        client, f"{url}/boards/hourly/seasons/1/scores?limit=100")}
    live = {e["user_id"]: e["score"] for e in await read(
        client, f"{url}/boards/hourly/scores?limit=100")}
    for user in users:
        old, new = writes.seasons_of(user)
        assert old > 0 and new > 0, (user, old, new)  # the writes went on across it
        assert (final.get(user, 0), live.get(user, 0)) == (old, new), user
        # Every write acknowledged before the boundary is in the old season.
        before = sum(1 for acked, _ in writes.acked_at[user] if acked < clock.boundary)
        assert before <= old, (user, before, old)


async def test_a_scheduled_reset_runs_once_on_time(tmp_path: Path) -> None:
    clock = FakeClock.before_the_hour()
    users = [f"player-{i}" for i in range(4)]
    with ServerProcess(tmp_path / "one", clock.env) as server:
        async with httpx.AsyncClient(timeout=10) as client:
            await make_hourly(client, clock, server.url)
            writes = Writes()
            async with season_events(client, clock, server.url) as events:
                await writes.run(clock, [server.url], users, clock.boundary + AFTER)
            assert set(writes.statuses) == {200}, writes.statuses
            assert len(events) == 1, events
            arrived, event = events[0]
            assert event == {"board": "hourly", "season": 2,
                             "started_at": clock.rfc3339(clock.boundary)}
            assert clock.boundary <= arrived < clock.boundary + 2, arrived - clock.boundary
            await check_one_reset(client, clock, server.url, writes, users)
    resets = [line for line in server.log_lines() if "season_reset" in line]
    assert len(resets) == 1, resets


async def test_two_instances_due_together_reset_once(tmp_path: Path) -> None:
    clock = FakeClock.before_the_hour()
    users = [f"player-{i}" for i in range(6)]
    with cluster_of_two(tmp_path, clock.env) as cluster:
        urls = [cluster.a.url, cluster.b.url]
        async with httpx.AsyncClient(timeout=10) as client:
            await make_hourly(client, clock, cluster.a.url)
            writes = Writes()
            async with season_events(client, clock, cluster.b.url) as events:
                await writes.run(clock, urls, users, clock.boundary + AFTER)
            assert set(writes.statuses) == {200}, writes.statuses
            assert [e for _, e in events] == [{"board": "hourly", "season": 2,
                                               "started_at": clock.rfc3339(clock.boundary)}]
            for url in urls:
                await check_one_reset(client, clock, url, writes, users)
        check_ledger(cluster, writes, users)
    resets = [line for s in (cluster.a, cluster.b) for line in s.log_lines()
              if "season_reset" in line and "failed" not in line]
    assert len(resets) == 1, resets


def check_ledger(cluster: Cluster, writes: Writes, users: list[str]) -> None:
    """The store's own account: each acknowledged write is one ledger row of one season."""
    rows = cluster._rows("SELECT user_id, season, count(*), sum(amount) FROM ledger "
                         "WHERE board = 'hourly' GROUP BY user_id, season")
    held = {(user, season): (int(count), int(total)) for user, season, count, total in rows}
    for user in users:
        old, new = writes.seasons_of(user)
        assert held == held | {(user, 1): (old, old), (user, 2): (new, new)}, (user, held)
    assert sum(c for c, _ in held.values()) == sum(len(a) for a in writes.acked_at.values())
