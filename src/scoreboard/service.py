"""The score update flow, independent of HTTP.

    authorise -> (idempotency) -> group commit: store.add + remember response
              -> ranking.apply -> board cache refreshed -> answer

The HTTP layer decides the order of checks that involve the request itself (size,
token, media type, JSON); everything about scores happens here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from scoreboard.auth import Identity
from scoreboard.broker.base import Broker, Snapshot
from scoreboard.errors import Conflict, Forbidden, NotFound, ScoreboardError, Unprocessable
from scoreboard.groupcommit import GroupCommitter
from scoreboard.model import MAX_TOTAL, RankedUser, StoredResponse, UserTotal
from scoreboard.ranking.base import Ranking
from scoreboard.ratelimit import RateLimits
from scoreboard.store.base import Store, Transaction

KEY_RETENTION_MS = 25 * 3600 * 1000  # API promise: at least 24 hours
PURGE_EVERY_MS = 60_000
PURGE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Board:
    """A pre-serialised page of the top scores and its ETag."""

    body: bytes
    etag: str


@dataclass(frozen=True, slots=True)
class ScoreUpdate:
    sub: str
    user_id: str
    delta: int
    name: str | None
    key: str | None
    fingerprint: str
    source: str


@dataclass(frozen=True, slots=True)
class UpdateResult:
    response: StoredResponse
    total: UserTotal | None  # None for a replay
    replayed: bool = False


def fingerprint(canonical_body: str) -> str:
    return hashlib.sha256(canonical_body.encode()).hexdigest()


class ScoreService:
    def __init__(
        self,
        store: Store,
        ranking: Ranking,
        limits: RateLimits,
        broker: Broker,
        observe_batch: Callable[[int], None] = lambda size: None,
        clock: Callable[[], float] = time.time,
        max_queue: int = 10_000,
    ) -> None:
        self._store = store
        self._ranking = ranking
        self._limits = limits
        self._broker = broker
        self._clock = clock
        self._version = 0  # newest ledger id the ranking has applied
        self._published = b""
        self._in_flight: set[tuple[str, str]] = set()
        self._boards: dict[int, Board] = {}
        self._next_purge_ms = 0
        self._committer: GroupCommitter[ScoreUpdate, UpdateResult] = GroupCommitter(
            store, self._apply_batch, self._after_commit, observe_batch, max_queue=max_queue
        )

    async def start(self) -> None:
        totals = await self._store.totals()
        await self._ranking.rebuild(totals)
        self._version = max((t.seq for t in totals), default=0)
        await self._publish_top()
        self._committer.start()

    async def stop(self) -> None:
        await self._committer.stop()

    # -- writes ---------------------------------------------------------------

    async def replay(self, sub: str, key: str, fingerprint: str) -> StoredResponse | None:
        """The remembered response when ``key`` was used before with an equal body."""
        stored = await self._store.find_response(sub, key)
        return stored if stored is not None and stored.fingerprint == fingerprint else None

    async def admit(self, sub: str) -> None:
        await self._limits.hit_update(sub)

    async def add(self, who: Identity, user_id: str, increment: int, key: str | None,
                  fingerprint: str) -> UpdateResult:
        if user_id != who.sub and not who.admin:
            raise Forbidden("a token may only change its own user's score", "other_user")
        own = user_id == who.sub
        update = ScoreUpdate(
            sub=who.sub, user_id=user_id, delta=increment, name=who.name if own else None,
            key=key, fingerprint=fingerprint, source="increment" if own else f"admin:{who.sub}",
        )
        if key is None:
            return await self._committer.submit(update)
        flight = (who.sub, key)
        if flight in self._in_flight:
            raise Conflict("a request with this Idempotency-Key is in flight", "key_in_flight")
        self._in_flight.add(flight)
        try:
            return await self._committer.submit(update)
        finally:
            self._in_flight.discard(flight)

    async def _apply_batch(self, tx: Transaction,
                           updates: Sequence[ScoreUpdate]) -> list[UpdateResult | ScoreboardError]:
        now_ms = int(self._clock() * 1000)
        preview = self._ranking.preview()
        results: list[UpdateResult | ScoreboardError] = []
        for u in updates:
            if u.key is not None:
                earlier = await tx.find_response(u.sub, u.key)
                if earlier is not None:
                    results.append(_replay_or_mismatch(earlier, u.fingerprint))
                    continue
            total = await tx.add(u.user_id, u.delta, u.name, u.source, now_ms)
            if total is None:
                results.append(Conflict(f"the total would pass {MAX_TOTAL}", "total_cap"))
                continue
            rank = await preview.rank_after(total)
            body = orjson.dumps({"user_id": u.user_id, "score": total.total, "rank": rank})
            response = StoredResponse(u.fingerprint, 200, body)
            if u.key is not None:
                await tx.remember(u.sub, u.key, response, now_ms)
            results.append(UpdateResult(response, total))
        if now_ms >= self._next_purge_ms:
            self._next_purge_ms = now_ms + PURGE_EVERY_MS
            await tx.forget_responses(now_ms - KEY_RETENTION_MS, PURGE_BATCH)
        return results

    async def _after_commit(self, results: Sequence[UpdateResult | ScoreboardError]) -> None:
        totals = [r.total for r in results if isinstance(r, UpdateResult) and r.total]
        if not totals:
            return
        self._version = max(self._version, max(t.seq for t in totals))
        if await self._ranking.apply(totals):
            self._boards.clear()
            await self._publish_top()

    async def _publish_top(self) -> None:
        """Tell every hub when the top 10 (membership, order, a score or a name) changed."""
        top = await self.board(10)
        if top.body != self._published:
            self._published = top.body
            await self._broker.publish(Snapshot(self._version, top.body))

    # -- reads ----------------------------------------------------------------

    async def board(self, limit: int) -> Board:
        board = self._boards.get(limit)
        if board is None:
            entries = await self._ranking.top(limit)
            body = orjson.dumps([e.as_dict() for e in entries])
            etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
            board = self._boards[limit] = Board(body, etag)
        return board

    async def user(self, user_id: str) -> RankedUser:
        ranked = await self._ranking.get(user_id)
        if ranked is None:
            raise NotFound(f"no score for user {user_id!r}", "unknown_user")
        return ranked

    async def ready(self) -> None:
        await self._store.ping()


def _replay_or_mismatch(earlier: StoredResponse, fingerprint: str) -> UpdateResult | Unprocessable:
    if earlier.fingerprint != fingerprint:
        return Unprocessable("this Idempotency-Key was used with a different body", "key_reused")
    return UpdateResult(earlier, None, replayed=True)
