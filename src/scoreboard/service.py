"""The score update flow, independent of HTTP.

    authorise -> (idempotency) -> group commit: store.add + remember response
              -> ranking.apply -> board cache refreshed -> answer

The HTTP layer decides the order of checks that involve the request itself (size,
token, media type, JSON); everything about scores happens here.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import orjson

from scoreboard.auth import Identity
from scoreboard.broker.base import Broker, Snapshot
from scoreboard.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    ScoreboardError,
    Unprocessable,
)
from scoreboard.groupcommit import GroupCommitter
from scoreboard.model import MAX_TOTAL, ActionKind, RankedUser, StoredResponse, Ticket, UserTotal
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
    delta: int  # 0 when the points come from the ticket
    name: str | None
    key: str | None
    fingerprint: str
    source: str
    action_id: str | None = None


@dataclass(frozen=True, slots=True)
class TicketRequest:
    ticket: Ticket


@dataclass(frozen=True, slots=True)
class UpdateResult:
    response: StoredResponse
    total: UserTotal | None  # None for a replay
    replayed: bool = False


Job = ScoreUpdate | TicketRequest
Outcome = UpdateResult | Ticket


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
        actions: Sequence[ActionKind] = (),
        require_action: bool = False,
    ) -> None:
        self._actions = {kind.name: kind for kind in actions}
        self._require_action = require_action
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
        self._committer: GroupCommitter[Job, Outcome] = GroupCommitter(
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

    async def admit_action(self, sub: str) -> None:
        await self._limits.hit_action(sub)

    async def add(self, who: Identity, user_id: str, increment: int | None,
                  action_id: str | None, key: str | None, fingerprint: str) -> UpdateResult:
        """Add ``increment``, or redeem the ticket ``action_id``, for ``user_id``."""
        if user_id != who.sub and not who.admin:
            raise Forbidden("a token may only change its own user's score", "other_user")
        if increment is not None and self._require_action and not who.admin:
            raise Forbidden("this server only counts completed actions (action_id)",
                            "action_required")
        own = user_id == who.sub
        source = "increment" if own else f"admin:{who.sub}"
        update = ScoreUpdate(
            sub=who.sub, user_id=user_id, delta=increment or 0, name=who.name if own else None,
            key=key, fingerprint=fingerprint, source=source, action_id=action_id,
        )
        if key is None:
            return cast(UpdateResult, await self._committer.submit(update))
        flight = (who.sub, key)
        if flight in self._in_flight:
            raise Conflict("a request with this Idempotency-Key is in flight", "key_in_flight")
        self._in_flight.add(flight)
        try:
            return cast(UpdateResult, await self._committer.submit(update))
        finally:
            self._in_flight.discard(flight)

    async def issue_ticket(self, who: Identity, kind_name: str) -> Ticket:
        """A single-use ticket for one action of ``kind_name``, stored before it is given."""
        kind = self._actions.get(kind_name)
        if kind is None:
            known = ", ".join(sorted(self._actions))
            raise Unprocessable(f"unknown action kind; known: {known}", "unknown_kind")
        now_ms = int(self._clock() * 1000)
        ticket = Ticket(
            id=secrets.token_urlsafe(24), user_id=who.sub, kind=kind.name, points=kind.points,
            not_before_ms=now_ms + int(kind.min_seconds * 1000),
            expires_ms=now_ms + int(kind.ttl_seconds * 1000),
        )
        return cast(Ticket, await self._committer.submit(TicketRequest(ticket)))

    async def _apply_batch(self, tx: Transaction,
                           jobs: Sequence[Job]) -> list[Outcome | ScoreboardError]:
        now_ms = int(self._clock() * 1000)
        preview = self._ranking.preview()
        results: list[Outcome | ScoreboardError] = []
        for u in jobs:
            if isinstance(u, TicketRequest):
                await tx.issue_ticket(u.ticket, now_ms)
                results.append(u.ticket)
                continue
            if u.key is not None:
                earlier = await tx.find_response(u.sub, u.key)
                if earlier is not None:
                    results.append(_replay_or_mismatch(earlier, u.fingerprint))
                    continue
            delta, source = u.delta, u.source
            if u.action_id is not None:
                redeemed = await _redeem(tx, u.action_id, u.user_id, now_ms)
                if isinstance(redeemed, ScoreboardError):
                    results.append(redeemed)
                    continue
                delta, source = redeemed.points, f"action:{redeemed.kind}:{redeemed.id[:8]}"
            total = await tx.add(u.user_id, delta, u.name, source, now_ms)
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
            # An expired ticket can never redeem; a day later nobody asks about it either.
            await tx.forget_tickets(now_ms - KEY_RETENTION_MS, PURGE_BATCH)
        return results

    async def _after_commit(self, results: Sequence[Outcome | ScoreboardError]) -> None:
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


async def _redeem(tx: Transaction, action_id: str, user_id: str,
                  now_ms: int) -> Ticket | ScoreboardError:
    """Take the ticket's points exactly once, inside the update's own transaction."""
    ticket = await tx.find_ticket(action_id)
    if ticket is None:
        return NotFound("no such action ticket", "unknown_ticket")
    if ticket.user_id != user_id:
        return Forbidden("this ticket was issued to another user", "ticket_not_yours")
    if ticket.redeemed_ms is not None:
        return Conflict("this ticket was already redeemed", "ticket_redeemed")
    if now_ms < ticket.not_before_ms:
        return Conflict("this action was completed too fast", "ticket_too_early")
    if now_ms >= ticket.expires_ms:
        return Gone("this ticket has expired", "ticket_expired")
    if not await tx.redeem_ticket(action_id, now_ms):
        return Conflict("this ticket was already redeemed", "ticket_redeemed")
    return ticket


def _replay_or_mismatch(earlier: StoredResponse, fingerprint: str) -> UpdateResult | Unprocessable:
    if earlier.fingerprint != fingerprint:
        return Unprocessable("this Idempotency-Key was used with a different body", "key_reused")
    return UpdateResult(earlier, None, replayed=True)
