"""The writer's jobs, and what each does inside the group-commit transaction.

Every write of the service is one of these jobs, so that all of them are ordered,
batched and made durable the same way (``groupcommit.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from scoreboard.errors import Conflict, Forbidden, Gone, NotFound, ScoreboardError, Unprocessable
from scoreboard.model import SecurityEvent, StoredResponse, Ticket, UserTotal
from scoreboard.store.base import Transaction


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
class Moderation:
    """An administrator's action, audited in the same transaction as its effect."""

    admin: str
    action: str  # view, ban, unban, revert, suspicious
    user_id: str
    since_ms: int = 0


@dataclass(frozen=True, slots=True)
class Moderated:
    action: str
    user_id: str
    total: UserTotal | None
    reverted: int = 0


@dataclass(frozen=True, slots=True)
class EventBatch:
    events: tuple[SecurityEvent, ...]


@dataclass(frozen=True, slots=True)
class FlagRequest:
    """Detection flagged a user: stored once per reason, whichever instance saw it."""

    user_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Flagged:
    user_id: str
    reason: str
    new: bool  # False: already flagged for it (by this instance or another)


@dataclass(frozen=True, slots=True)
class UpdateResult:
    response: StoredResponse
    total: UserTotal | None  # None for a replay
    replayed: bool = False
    points: int = 0


Job = ScoreUpdate | TicketRequest | Moderation | EventBatch | FlagRequest
Outcome = UpdateResult | Ticket | Moderated | Flagged | None


async def redeem(tx: Transaction, action_id: str, user_id: str,
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


def job_user(job: Job) -> str:
    """The user whose rows a job locks ("" for none): a batch takes them in this order,
    so that two instances' batches never wait on each other in a cycle."""
    if isinstance(job, ScoreUpdate | Moderation):
        return job.user_id
    return ""


async def flag(tx: Transaction, job: FlagRequest, now_ms: int) -> Flagged:
    new = await tx.flag(job.user_id, job.reason, now_ms)
    if new:
        await tx.record_events([SecurityEvent(job.user_id, now_ms, "flagged", job.reason)])
    return Flagged(job.user_id, job.reason, new)


async def moderate(tx: Transaction, job: Moderation, banning: set[str],
                    now_ms: int) -> Moderated:
    total: UserTotal | None = None
    reverted = 0
    detail = ""
    if job.action == "ban":
        detail = "banned" if await tx.ban(job.user_id, job.admin, now_ms) else "already banned"
        banning.add(job.user_id)
    elif job.action == "unban":
        total = await tx.unban(job.user_id)
        banning.discard(job.user_id)
    elif job.action == "revert":
        total, reverted = await tx.revert(job.user_id, job.since_ms, f"revert:{job.admin}",
                                          now_ms)
        detail = f"since_ms={job.since_ms} reverted={reverted}"
    await tx.audit(job.admin, job.action, job.user_id, detail, now_ms)
    return Moderated(job.action, job.user_id, total, reverted)


def replay_or_mismatch(earlier: StoredResponse, fingerprint: str) -> UpdateResult | Unprocessable:
    if earlier.fingerprint != fingerprint:
        return Unprocessable("this Idempotency-Key was used with a different body", "key_reused")
    return UpdateResult(earlier, None, replayed=True)
