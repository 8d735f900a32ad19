"""The score update flow, independent of HTTP.

    authorise -> (idempotency) -> group commit: [redeem ticket] + store.add + remember
              -> ranking.apply -> board cache refreshed -> snapshot to the broker -> answer

Tickets, bans, reverts, audit records and security events are jobs of the same
writer (``jobs.py``); detection watches accepted points and refusals.

The HTTP layer decides the order of checks that involve the request itself (size,
token, media type, JSON); everything about scores happens here.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import orjson
import structlog

from scoreboard.auth import Identity
from scoreboard.broker.base import Broker, Snapshot
from scoreboard.detection import Refusals, Velocity
from scoreboard.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ScoreboardError,
    Unprocessable,
)
from scoreboard.etags import etag_of
from scoreboard.groupcommit import GroupCommitter
from scoreboard.jobs import (
    EventBatch,
    Flagged,
    FlagRequest,
    Job,
    Moderated,
    Moderation,
    Outcome,
    ScoreUpdate,
    TicketRequest,
    UpdateResult,
    flag,
    job_user,
    moderate,
    redeem,
    replay_or_mismatch,
)
from scoreboard.model import (
    MAX_TOTAL,
    ActionKind,
    Flag,
    RankedUser,
    SecurityEvent,
    StoredResponse,
    Ticket,
    UserRecord,
    UserTotal,
)
from scoreboard.ranking.base import Ranking
from scoreboard.ratelimit import RateLimits
from scoreboard.store.base import Store, Transaction

KEY_RETENTION_MS = 25 * 3600 * 1000  # API promise: at least 24 hours
PURGE_EVERY_MS = 60_000
PURGE_BATCH = 5000
ADMIN_VIEW_ROWS = 100

log = structlog.get_logger("scoreboard.service")
_TAKEN = object()  # a key this batch has already given to an earlier update


@dataclass(frozen=True, slots=True)
class Board:
    """A pre-serialised page of the top scores, its ETag and the ranking's version."""

    body: bytes
    etag: str
    version: int


@dataclass(frozen=True, slots=True)
class Staged:
    """An update written in the open transaction, waiting for its rank."""

    update: ScoreUpdate
    total: UserTotal
    points: int


@dataclass(frozen=True, slots=True)
class AdminView:
    record: UserRecord
    rank: int | None
    flags: list[str]


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
        on_flag: Callable[[str], None] = lambda reason: None,
        on_rebuild: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._on_rebuild = on_rebuild
        self._actions = {kind.name: kind for kind in actions}
        self._refusals = Refusals(clock)
        self._velocity = Velocity(store.points_since, clock)
        self._on_flag = on_flag
        self._require_action = require_action
        self._store = store
        self._ranking = ranking
        self._limits = limits
        self._broker = broker
        self._clock = clock
        self._in_flight: set[tuple[str, str]] = set()
        self._boards: dict[int, Board] = {}
        self._next_purge_ms = 0
        self._detecting: asyncio.Task[None] | None = None
        self._committer: GroupCommitter[Job, Outcome] = GroupCommitter(
            store, self._apply_batch, self._after_commit, observe_batch, max_queue=max_queue
        )
        broker.subscribe(self._board_changed)  # changes made by other instances too
        broker.on_reconnect(self.refresh)

    async def start(self) -> None:
        started = time.perf_counter()
        banned = await self._store.banned()
        totals = await self._store.totals()
        await self._ranking.rebuild(totals, banned)
        self._on_rebuild(time.perf_counter() - started)
        log.info("ranking_rebuilt", users=len(totals),
                 seconds=round(time.perf_counter() - started, 3))
        await self.refresh()
        self._committer.start()
        self._detecting = asyncio.create_task(self._velocity.run(self._flag), name="velocity")

    async def stop(self) -> None:
        if self._detecting is not None:
            self._detecting.cancel()
            await asyncio.gather(self._detecting, return_exceptions=True)
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
        if user_id != who.sub and not who.writes_for_others:
            raise Forbidden("a token may only change its own user's score", "other_user")
        if increment is not None and self._require_action and not who.admin:
            raise Forbidden("this server only counts completed actions (action_id)",
                            "action_required")
        own = user_id == who.sub
        source = "increment" if own else f"{'admin' if who.admin else 'server'}:{who.sub}"
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
        if kind is None:  # fields (422) before authorisation (403), as API.md orders them
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
        """Every job of the batch in one transaction; the results in the jobs' order.

        Rows are locked in one order on every instance — the batch's Idempotency-Keys
        first (sorted), then each user's rows, users in order — so that two instances'
        batches never wait on each other in a cycle. Bans are read here, in the writer's
        own transaction: a ban committed anywhere refuses every later write.
        """
        now_ms = int(self._clock() * 1000)
        updates = [job for job in jobs if isinstance(job, ScoreUpdate)]
        claimed = await self._claim_keys(tx, updates, now_ms)
        users = {job.user_id for job in updates} | {job.sub for job in updates} | {
            job.ticket.user_id for job in jobs if isinstance(job, TicketRequest)}
        banning = await tx.banned_among(sorted(users)) if users else set()
        order = sorted(range(len(jobs)), key=lambda i: job_user(jobs[i]))
        results: list[Outcome | ScoreboardError | Staged] = [None] * len(jobs)
        for i in order:
            job = jobs[i]
            if isinstance(job, ScoreUpdate):
                results[i] = await self._apply_update(tx, job, claimed, banning, now_ms)
            elif isinstance(job, TicketRequest):
                if job.ticket.user_id in banning:
                    results[i] = Forbidden("this user is banned", "banned")
                else:
                    await tx.issue_ticket(job.ticket, now_ms)
                    results[i] = job.ticket
            elif isinstance(job, Moderation):
                results[i] = await moderate(tx, job, banning, now_ms)
            elif isinstance(job, FlagRequest):
                results[i] = await flag(tx, job, now_ms)
            else:
                await tx.record_events(job.events)
        if now_ms >= self._next_purge_ms:
            self._next_purge_ms = now_ms + PURGE_EVERY_MS
            await tx.forget_responses(now_ms - KEY_RETENTION_MS, PURGE_BATCH)
            # An expired ticket can never redeem; a day later nobody asks about it either.
            await tx.forget_tickets(now_ms - KEY_RETENTION_MS, PURGE_BATCH)
        return await self._answer(tx, results, order)

    @staticmethod
    async def _claim_keys(tx: Transaction, updates: Sequence[ScoreUpdate],
                          now_ms: int) -> dict[tuple[str, str], StoredResponse | None]:
        """Take each keyed update's Idempotency-Key, in key order: the answer remembered
        under it, or None when this batch holds it now."""
        keys = sorted({(u.sub, u.key) for u in updates if u.key is not None})
        return {(sub, key): await tx.claim(sub, key, now_ms) for sub, key in keys}

    async def _answer(self, tx: Transaction, results: list[Outcome | ScoreboardError | Staged],
                      order: list[int]) -> list[Outcome | ScoreboardError]:
        """Each staged update's answer, with its rank (one ranking call for the batch, in
        the order the updates were written), remembered under its Idempotency-Key in the
        same transaction."""
        staged = [i for i in order if isinstance(results[i], Staged)]
        if not staged:  # tickets, moderation, events: no ranks to ask for
            return cast(list[Outcome | ScoreboardError], results)
        totals = [cast(Staged, results[i]).total for i in staged]
        for i, rank in zip(staged, await self._ranking.ranks_after(tx, totals), strict=True):
            r = cast(Staged, results[i])
            u, total = r.update, r.total
            body = orjson.dumps({"user_id": u.user_id, "score": total.total, "rank": rank})
            response = StoredResponse(u.fingerprint, 200, body)
            if u.key is not None:
                await tx.remember(u.sub, u.key, response)
            results[i] = UpdateResult(response, total, points=r.points)
        return cast(list[Outcome | ScoreboardError], results)

    async def _apply_update(
        self, tx: Transaction, u: ScoreUpdate,
        claimed: dict[tuple[str, str], StoredResponse | None], banning: set[str], now_ms: int,
    ) -> Staged | UpdateResult | ScoreboardError:
        if u.key is not None:
            earlier = claimed.pop((u.sub, u.key), _TAKEN)
            if earlier is _TAKEN:  # the same key twice in one batch: the first holds it
                return Conflict("a request with this Idempotency-Key is in flight",
                                "key_in_flight")
            if earlier is not None:
                return replay_or_mismatch(cast(StoredResponse, earlier), u.fingerprint)
        outcome = await self._stage(tx, u, banning, now_ms)
        if isinstance(outcome, ScoreboardError) and u.key is not None:
            await tx.release(u.sub, u.key)  # refused: nothing is remembered, a retry may pass
        return outcome

    @staticmethod
    async def _stage(tx: Transaction, u: ScoreUpdate, banning: set[str],
                     now_ms: int) -> Staged | ScoreboardError:
        """The update written in the transaction, or why it is refused (nothing written)."""
        if u.user_id in banning or u.sub in banning:
            return Forbidden("this user is banned", "banned")
        delta, source = u.delta, u.source
        if u.action_id is not None:
            redeemed = await redeem(tx, u.action_id, u.user_id, now_ms)
            if isinstance(redeemed, ScoreboardError):
                return redeemed
            delta, source = redeemed.points, f"action:{redeemed.kind}:{redeemed.id[:8]}"
        total = await tx.add(u.user_id, delta, u.name, source, now_ms)
        if total is None:
            if u.action_id is not None:  # a refused request changes nothing: not the ticket
                await tx.unredeem_ticket(u.action_id)
            return Conflict(f"the total would pass {MAX_TOTAL}", "total_cap")
        return Staged(u, total, delta)

    async def _after_commit(self, results: Sequence[Outcome | ScoreboardError]) -> None:
        totals: list[UserTotal] = []
        changed = False
        for r in results:
            if isinstance(r, UpdateResult) and r.total is not None:
                totals.append(r.total)
            elif isinstance(r, Moderated):
                if r.action == "ban":
                    changed |= await self._ranking.ban(r.user_id)
                elif r.action == "unban":
                    changed |= await self._ranking.unban(r.user_id, r.total)
                elif r.action == "revert" and r.total is not None:
                    totals.append(r.total)
            elif isinstance(r, Flagged) and r.new:
                log.warning("user_flagged", user_id=r.user_id, reason=r.reason)
                self._on_flag(r.reason)
        if totals:
            changed |= await self._ranking.apply(totals)
            self._velocity.saw(t.user_id for t in totals)
        if changed:
            await self.refresh()

    async def refresh(self) -> None:
        """Re-read the board and tell every instance: the watched top changed, or
        snapshots may have been missed. Hubs skip a top 10 they already show."""
        self._boards.clear()
        top = await self.board(10)
        await self._broker.publish(Snapshot(top.version, top.body))

    def _board_changed(self, snapshot: Snapshot) -> None:
        """A snapshot from any instance: cached pages older than it are stale."""
        if any(board.version < snapshot.version for board in self._boards.values()):
            self._boards.clear()

    # -- detection and moderation --------------------------------------------

    def refused(self, sub: str, reason: str) -> None:
        """A write by a verified user was refused: a security event, maybe a flag."""
        if self._limits.allow_event(sub):  # bounded: a flood cannot flood the database
            now_ms = int(self._clock() * 1000)
            self._committer.enqueue(EventBatch((SecurityEvent(sub, now_ms, reason, ""),)))
        raised = self._refusals.refusal(sub, reason)
        if raised:
            self._flag(sub, raised)

    def _flag(self, user_id: str, reason: str) -> None:
        """Store the flag (once per reason, on any instance); logged and counted then."""
        self._committer.enqueue(FlagRequest(user_id, reason))

    async def moderate(self, admin: str, action: str, user_id: str,
                       since_ms: int = 0) -> Moderated:
        outcome = await self._committer.submit(Moderation(admin, action, user_id, since_ms))
        return cast(Moderated, outcome)

    async def admin_view(self, user_id: str) -> AdminView:
        record = await self._store.user_record(user_id, ADMIN_VIEW_ROWS)
        if record.total is None and not record.events and not record.banned:
            raise NotFound(f"nothing is known of user {user_id!r}", "unknown_user")
        ranked = await self._ranking.get(user_id)
        return AdminView(record, ranked.rank if ranked else None, record.flags)

    async def suspicious(self) -> list[Flag]:
        """Flagged users, longest-flagged first: the store's, the same on every instance."""
        return await self._store.flags()

    # -- reads ----------------------------------------------------------------

    async def board(self, limit: int) -> Board:
        board = self._boards.get(limit)
        if board is None:
            top = await self._ranking.top(limit)
            body = orjson.dumps([e.as_dict() for e in top.entries])
            etag = etag_of(body)
            board = self._boards[limit] = Board(body, etag, top.version)
        return board

    async def user(self, user_id: str) -> RankedUser:
        ranked = await self._ranking.get(user_id)
        if ranked is None:
            raise NotFound(f"no score for user {user_id!r}", "unknown_user")
        return ranked

    async def ready(self) -> None:
        await self._store.ping()
