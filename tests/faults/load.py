"""The load of a fault run: keyed writers, polling readers and live-stream watchers.

Writers are the users: each sends one increment at a time with an Idempotency-Key of
its own and retries it, same key, until a definite answer (``history.py``). Readers
poll ``GET /scores?limit=100`` and ``GET /users/{id}``; watchers hold
``GET /scores/stream`` open and reconnect when it ends. Readers and watchers check as
they go that no score they see ever goes down and that every score is an integer.

Seasons: a reset (``reset``, sent by a fault) empties the board, so "never goes down"
holds within a season. The load knows the season every instance serves only between
resets: ``season`` is None from the moment a reset is sent until the fault has seen
every instance serve the store's new season (``settled``), and a reading taken while it
was None, or across a change of it, is checked for order and integers but not against
earlier readings. A stream names each new season (``event: season``) itself: frames
after that event are that season's. Readers also read closed seasons, whose final
standings must never change.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import orjson

from tests.faults.cluster import BOARD, Cluster
from tests.faults.history import Attempt, History, Operation, ResetOp
from tests.support import SECRET

DEFINITE_REFUSALS = {400, 401, 403, 404, 409, 410, 413, 415, 422}
RESET_TIMEOUT = 30.0


@dataclass
class LoadShape:
    users: int = 30
    readers: int = 3
    watchers: int = 4
    max_increment: int = 7
    think_seconds: float = 0.02  # a writer's pause between operations
    request_timeout: float = 5.0  # a write may wait 2 s for the lock, then commit
    give_up_after: float = 60.0  # an operation's own deadline, retries included


@dataclass
class StreamEnd:
    instance: int
    at: float
    clean: bool  # the server ended the response properly (a graceful stop)
    error: str = ""


@dataclass
class Watch:
    """What one stream watcher saw."""

    instance: int
    events: int = 0
    last_event: float = 0.0
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (at, seconds without)
    ends: list[StreamEnd] = field(default_factory=list)


def token(user: str, ttl: int = 6 * 3600, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + ttl, **claims}, SECRET,
                      algorithm="HS256")


def integer_scores(entries: Iterable[Any]) -> bool:
    return all(type(e.get("score")) is int and type(e.get("rank")) is int for e in entries)


class Load:
    def __init__(self, cluster: Cluster, history: History, shape: LoadShape,
                 rng: random.Random, run_id: str) -> None:
        self.cluster = cluster
        self.history = history
        self.shape = shape
        self.rng = rng
        self.run_id = run_id
        self.users = [f"u{i:03d}" for i in range(shape.users)]
        self.tokens = {u: token(u) for u in self.users}
        self.watches = [Watch(w % len(cluster.servers)) for w in range(shape.watchers)]
        # The season every instance serves; None while a reset is under way. ``epoch``
        # changes with it, so that a reading taken across a change is not compared.
        self.season: int | None = 1
        self.epoch = 0
        self.finals: dict[int, bytes] = {}  # closed season -> its final standings, first read
        self._writing = True
        self._reading = True
        self._ack_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._writers: list[asyncio.Task[None]] = []
        self._others: list[asyncio.Task[None]] = []
        limits = httpx.Limits(max_connections=shape.users + shape.readers + 16,
                              max_keepalive_connections=shape.users + shape.readers)
        self.client = httpx.AsyncClient(timeout=shape.request_timeout, limits=limits)
        self.stream_client = httpx.AsyncClient(
            timeout=httpx.Timeout(5.0, read=30.0),
            limits=httpx.Limits(max_connections=shape.watchers + 4))

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._writers = [asyncio.create_task(self._writer(u)) for u in self.users]
        self._others = [asyncio.create_task(self._reader(r)) for r in range(self.shape.readers)]
        self._others += [asyncio.create_task(self._watcher(w)) for w in self.watches]

    async def stop(self, drain_seconds: float = 30.0) -> None:
        """No new operations; those under way get ``drain_seconds`` to finish."""
        self._writing = False
        _, pending = await asyncio.wait(self._writers, timeout=drain_seconds) \
            if self._writers else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)
        for op in self.history.operations:
            if op.status == "invoked":  # cancelled between attempts: may have been applied
                op.status = "unknown"
        self._reading = False
        for task in self._others:
            task.cancel()
        await asyncio.gather(*self._others, return_exceptions=True)
        await self.client.aclose()
        await self.stream_client.aclose()

    async def next_ack(self, instance: int, timeout: float = 10.0) -> None:
        """Wait for the next first-time 200 from ``instance``: a commit just happened."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ack_waiters.append((instance, future))
        await asyncio.wait_for(future, timeout)

    # -- seasons -----------------------------------------------------------------------

    def unsettled(self) -> None:
        """A reset is about to be sent: the season served is not known until ``settled``."""
        self.season = None
        self.epoch += 1

    def settled(self, season: int) -> None:
        """Every instance serves ``season`` (the store's); the ones before are closed."""
        self.season = season
        self.epoch += 1

    async def reset(self, instance: int) -> ResetOp:
        """One manual reset of the board, sent once (``unsettled`` first)."""
        self.unsettled()
        op = ResetOp(f"{self.run_id}-reset-{len(self.history.resets) + 1}", instance,
                     time.monotonic())
        self.history.resets.append(op)
        auth = token(op.sub, scope="scoreboard:admin")
        try:
            r = await self.client.post(f"{self.cluster.urls[instance]}/admin/boards/{BOARD}/reset",
                                       headers={"Authorization": f"Bearer {auth}"},
                                       timeout=RESET_TIMEOUT)
            op.status = r.status_code
            if r.status_code == 200:
                op.season = r.json().get("season")
            elif r.status_code != 503:  # 503 says "retry"; anything else is wrong
                self.history.violation(f"reset {op.sub} on instance {instance}: "
                                       f"{r.status_code} {r.text[:200]!r}")
        except httpx.HTTPError as exc:
            op.error = type(exc).__name__
        finally:
            op.ended = time.monotonic()
        return op

    # -- writers ---------------------------------------------------------------------

    async def _writer(self, user: str) -> None:
        n = 0
        while self._writing:
            n += 1
            op = self.history.begin(user, f"{self.run_id}:{user}:{n}",
                                    self.rng.randint(1, self.shape.max_increment))
            await self.execute(op)
            await asyncio.sleep(self.shape.think_seconds * self.rng.random() * 2)

    async def execute(self, op: Operation) -> None:
        """Send ``op`` until it gets a definite answer or its deadline passes."""
        deadline = time.monotonic() + self.shape.give_up_after
        pause = 0.05
        first = self.users.index(op.user) if op.user in self.users else 0
        body = {"user_id": op.user, "increment": op.increment}
        headers = {"Authorization": f"Bearer {self.tokens[op.user]}",
                   "Idempotency-Key": op.key}
        while True:
            instance = (first + len(op.attempts)) % len(self.cluster.servers)
            attempt = Attempt(instance, time.monotonic(), 0.0, None)
            op.attempts.append(attempt)
            try:
                r = await self.client.post(self.cluster.urls[instance] + "/score", json=body,
                                           headers=headers)
                attempt.status = r.status_code
                attempt.replayed = r.headers.get("idempotent-replayed") == "true"
                if r.status_code == 200:
                    attempt.body = r.content
            except httpx.HTTPError as exc:
                attempt.error = type(exc).__name__
            except asyncio.CancelledError:
                attempt.error = "cancelled"  # the run ended with this attempt in flight
                attempt.ended = time.monotonic()
                op.status = "unknown"
                raise
            attempt.ended = time.monotonic()
            if attempt.status == 200:
                op.status = "ok"
                self._check_ok(op, attempt)
                return
            if attempt.status in DEFINITE_REFUSALS and not (
                    attempt.status == 409 and b"in flight" in r.content):
                op.status = "refused"
                self.history.violation(
                    f"{op.key}: refused {attempt.status} {r.text[:200]!r} (this load sends "
                    "only valid requests)")
                return
            if attempt.status is not None and attempt.status >= 500 and attempt.status != 503:
                self.history.violation(f"{op.key}: server error {attempt.status}")
            if time.monotonic() > deadline:
                ambiguous = any(a.status not in (503, 429) for a in op.attempts)
                op.status = "unknown" if ambiguous else "refused"
                return
            await asyncio.sleep(pause * (0.5 + self.rng.random()))
            pause = min(pause * 2, 1.0)

    def _check_ok(self, op: Operation, attempt: Attempt) -> None:
        try:
            answer = orjson.loads(attempt.body)
        except orjson.JSONDecodeError:
            self.history.violation(f"{op.key}: a 200 that is not JSON: {attempt.body[:200]!r}")
            return
        if answer.get("user_id") != op.user or not integer_scores([answer]):
            self.history.violation(f"{op.key}: unexpected 200 body {attempt.body[:200]!r}")
        if not attempt.replayed:
            for waiter in list(self._ack_waiters):
                if waiter[0] == attempt.instance and not waiter[1].done():
                    waiter[1].set_result(None)
                    self._ack_waiters.remove(waiter)

    # -- readers ---------------------------------------------------------------------

    async def _reader(self, number: int) -> None:
        seen: dict[tuple[int, int, str], int] = {}  # (instance, season, user) -> highest
        rng = random.Random(self.rng.random())
        who = f"reader {number}"
        while self._reading:
            instance = rng.randrange(len(self.cluster.servers))
            url = self.cluster.urls[instance]
            season, epoch = self.season, self.epoch
            with contextlib.suppress(httpx.HTTPError):
                board = await self.client.get(url + "/scores", params={"limit": 100})
                user = rng.choice(self.users)
                one = await self.client.get(f"{url}/users/{user}")
                # Compared with earlier readings only if no reset began meanwhile.
                known = season if self.epoch == epoch else None
                if board.status_code == 200:
                    self._check_board(who, instance, board.json(), seen, known)
                if one.status_code == 200:
                    self._check_board(who, instance, [one.json()], seen, known, ranked=False)
                elif one.status_code == 404 and known is not None and \
                        seen.get((instance, known, user), 0) > 0:
                    self.history.violation(
                        f"{who}: {user} had {seen[(instance, known, user)]} in season "
                        f"{known} on instance {instance}, then 404")
                elif one.status_code not in (404, 503):
                    self.history.violation(f"{who}: GET /users/{user} answered "
                                           f"{one.status_code}")
                await self._read_final(who, instance, rng)
            await asyncio.sleep(0.05 + rng.random() * 0.1)

    async def _read_final(self, who: str, instance: int, rng: random.Random) -> None:
        """A closed season's standings: the same bytes whenever and wherever read."""
        closed = (self.season or 1) - 1
        if closed < 1:
            return
        season = rng.randint(1, closed)
        r = await self.client.get(
            f"{self.cluster.urls[instance]}/boards/{BOARD}/seasons/{season}/scores",
            params={"limit": 100})
        if r.status_code == 503:
            return  # its standings are being stored
        if r.status_code != 200:
            self.history.violation(f"{who}: closed season {season} answered {r.status_code} "
                                   f"on instance {instance}: {r.text[:200]!r}")
            return
        first = self.finals.setdefault(season, r.content)
        if r.content != first:
            self.history.violation(f"{who}: the final standings of season {season} changed on "
                                   f"instance {instance}: {first[:200]!r} -> {r.content[:200]!r}")

    def _check_board(self, who: str, instance: int, entries: list[Any],
                     seen: dict[tuple[int, int, str], int], season: int | None,
                     ranked: bool = True) -> None:
        """Integers, ranks 1..N and best first always; with ``season`` known, no score
        lower than one seen before in that season on that instance."""
        if not integer_scores(entries):
            self.history.violation(f"{who}: a score or rank that is not an integer: {entries[:3]}")
            return
        if ranked:
            if [e["rank"] for e in entries] != list(range(1, len(entries) + 1)):
                self.history.violation(f"{who}: ranks are not 1..N on instance {instance}")
            scores = [e["score"] for e in entries]
            if scores != sorted(scores, reverse=True):
                self.history.violation(f"{who}: board not best-first on instance {instance}")
        if season is None:
            return
        for e in entries:
            key = (instance, season, e["user_id"])
            if e["score"] < seen.get(key, 0):
                self.history.violation(
                    f"{who}: {e['user_id']} went down {seen[key]} -> {e['score']} in season "
                    f"{season} on instance {instance}")
            seen[key] = max(seen.get(key, 0), e["score"])

    # -- stream watchers ---------------------------------------------------------------

    async def _watcher(self, watch: Watch) -> None:
        seen: dict[tuple[int, int, str], int] = {}
        version = -1
        who = f"stream watcher on instance {watch.instance}"
        while self._reading:
            url = self.cluster.urls[watch.instance] + "/scores/stream"
            clean, error = False, ""
            # The season of the frames: the load's while no reset begins, until the stream
            # announces one itself.
            season, epoch = self.season, self.epoch
            announced: int | None = None
            try:
                async with self.stream_client.stream("GET", url) as response:
                    if response.status_code != 200:
                        error = f"status {response.status_code}"
                    else:
                        data: bytes | None = None
                        event, event_id = "", -1
                        async for line in response.aiter_lines():
                            if line.startswith("event:"):
                                event = line[6:].strip()
                            elif line.startswith("id:"):
                                event_id = int(line[3:])
                            elif line.startswith("data:"):
                                data = line[5:].strip().encode()
                            elif line == "" and data is not None:
                                if event == "season":
                                    announced = self._season_event(who, data, announced,
                                                                   season, epoch)
                                else:
                                    known = announced if announced is not None else (
                                        season if self.epoch == epoch else None)
                                    version = self._stream_event(watch, who, event_id,
                                                                 version, data, seen, known)
                                data, event = None, ""
                        clean = True
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            watch.ends.append(StreamEnd(watch.instance, time.monotonic(), clean, error))
            await asyncio.sleep(0.2)

    def _season_event(self, who: str, data: bytes, announced: int | None,
                      season: int | None, epoch: int) -> int | None:
        """``event: season``: the frames after it are of the season it names."""
        try:
            number = orjson.loads(data)["season"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.history.violation(f"{who}: a season event that is not one: {data[:200]!r}")
            return announced
        if type(number) is not int or number <= (announced or 0):
            self.history.violation(f"{who}: season event {number} after season {announced}")
            return announced
        if announced is None and season is not None and self.epoch == epoch and number <= season:
            # Opened after every instance served ``season``: its first frames were of it.
            self.history.violation(f"{who}: announced season {number}, but the stream opened "
                                   f"after every instance served season {season}")
        return number

    def _stream_event(self, watch: Watch, who: str, event_id: int, version: int, data: bytes,
                      seen: dict[tuple[int, int, str], int], season: int | None) -> int:
        now = time.monotonic()
        if watch.last_event:
            watch.gaps.append((now, now - watch.last_event))
            del watch.gaps[:-2000]
        watch.events += 1
        watch.last_event = now
        if event_id < version:
            self.history.violation(f"{who}: version went down {version} -> {event_id}")
        self._check_board(who, watch.instance, orjson.loads(data), seen, season)
        return max(version, event_id)
