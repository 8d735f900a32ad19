"""The write side, independent of HTTP: what a request asks the writer for.

    authorise -> (Idempotency-Key in flight here?) -> group commit (``batches.py``)

The HTTP layer decides the order of checks that involve the request itself (size,
token, media type, JSON, fields); everything about scores happens here and in the
writer's transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from typing import cast

from scoreboard.auth import Identity
from scoreboard.detection import Refusals
from scoreboard.errors import Conflict, Forbidden, Unprocessable
from scoreboard.groupcommit import GroupCommitter
from scoreboard.jobs import (
    BoardChange,
    BoardChanged,
    EventBatch,
    FlagRequest,
    Job,
    Moderated,
    Moderation,
    Outcome,
    ScoreUpdate,
    SeasonReset,
    SeasonsReset,
    TicketRequest,
    UpdateResult,
)
from scoreboard.model import ActionKind, BoardSpec, SecurityEvent, StoredResponse, Ticket
from scoreboard.ratelimit import RateLimits
from scoreboard.store.base import Store


def fingerprint(canonical_request: str) -> str:
    return hashlib.sha256(canonical_request.encode()).hexdigest()


class Writes:
    def __init__(self, store: Store, committer: GroupCommitter[Job, Outcome],
                 limits: RateLimits, clock: Callable[[], float] = time.time,
                 actions: Sequence[ActionKind] = (), require_action: bool = False) -> None:
        self._store = store
        self._committer = committer
        self._limits = limits
        self._clock = clock
        self._actions = {kind.name: kind for kind in actions}
        self._require_action = require_action
        self._refusals = Refusals(clock)
        self._in_flight: set[tuple[str, str]] = set()

    async def replay(self, sub: str, key: str, fingerprint: str) -> StoredResponse | None:
        """The remembered response when ``key`` was used before with an equal request."""
        stored = await self._store.find_response(sub, key)
        return stored if stored is not None and stored.fingerprint == fingerprint else None

    async def admit(self, sub: str) -> None:
        await self._limits.hit_update(sub)

    async def admit_action(self, sub: str) -> None:
        await self._limits.hit_action(sub)

    async def add(self, who: Identity, board_id: str, user_id: str, amount: int | None,
                  action_id: str | None, key: str | None, fingerprint: str,
                  board_route: bool = False) -> UpdateResult:
        """Write ``amount`` (an increment or a score, by the board's operator), or redeem
        the ticket ``action_id``, for ``user_id``."""
        if user_id != who.sub and not who.writes_for_others:
            raise Forbidden("a token may only change its own user's score", "other_user")
        if amount is not None and self._require_action and not who.admin:
            raise Forbidden("this server only counts completed actions (action_id)",
                            "action_required")
        own = user_id == who.sub
        source = "increment" if own else f"{'admin' if who.admin else 'server'}:{who.sub}"
        update = ScoreUpdate(
            sub=who.sub, user_id=user_id, board=board_id, amount=amount or 0,
            name=who.name if own else None, key=key, fingerprint=fingerprint, source=source,
            action_id=action_id, board_route=board_route,
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

    def action_kind(self, name: str) -> ActionKind:
        kind = self._actions.get(name)
        if kind is None:  # fields (422) before authorisation (403), as API.md orders them
            known = ", ".join(sorted(self._actions))
            raise Unprocessable(f"unknown action kind; known: {known}", "unknown_kind")
        return kind

    async def issue_ticket(self, who: Identity, kind_name: str) -> Ticket:
        """A single-use ticket for one action of ``kind_name``, stored before it is given."""
        kind = self.action_kind(kind_name)
        now_ms = int(self._clock() * 1000)
        ticket = Ticket(
            id=secrets.token_urlsafe(24), user_id=who.sub, kind=kind.name, points=kind.points,
            not_before_ms=now_ms + int(kind.min_seconds * 1000),
            expires_ms=now_ms + int(kind.ttl_seconds * 1000), board=kind.board,
        )
        return cast(Ticket, await self._committer.submit(TicketRequest(ticket)))

    def refused(self, sub: str, reason: str) -> None:
        """A write by a verified user was refused: a security event, maybe a flag."""
        if self._limits.allow_event(sub):  # bounded: a flood cannot flood the database
            now_ms = int(self._clock() * 1000)
            self._committer.enqueue(EventBatch((SecurityEvent(sub, now_ms, reason, ""),)))
        raised = self._refusals.refusal(sub, reason)
        if raised:
            self.flag(sub, raised)

    def flag(self, user_id: str, reason: str) -> None:
        """Store the flag (once per reason, on any instance); logged and counted then."""
        self._committer.enqueue(FlagRequest(user_id, reason))

    async def moderate(self, admin: str, action: str, user_id: str, since_ms: int = 0,
                       board: str | None = None) -> Moderated:
        job = Moderation(admin, action, user_id, since_ms, board)
        return cast(Moderated, await self._committer.submit(job))

    async def change_board(self, admin: str, action: str, spec: BoardSpec) -> BoardChanged:
        return cast(BoardChanged, await self._committer.submit(BoardChange(admin, action, spec)))

    async def reset(self, admin: str, board_id: str) -> SeasonsReset:
        """Close the board's season now and open the next (audited)."""
        return cast(SeasonsReset, await self._committer.submit(SeasonReset(board_id, admin=admin)))
