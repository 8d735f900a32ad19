"""Public JSON shapes, for the OpenAPI description and for typed responses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

UserId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@|-]{1,128}$", examples=["alice"])]
BoardId = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$", examples=["weekly"])]
Score = Annotated[int, Field(ge=0, le=2**53 - 1)]


class ScoreEntry(BaseModel):
    rank: int = Field(ge=1)
    user_id: UserId
    name: str = Field(description="display name; falls back to the user id")
    score: int = Field(ge=0, le=2**53 - 1)


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: str = Field(examples=["demo"], description="one of the configured action kinds")


class ActionTicket(BaseModel):
    action_id: str
    kind: str
    points: int = Field(ge=1)
    not_before: str = Field(description="RFC 3339; redeeming earlier is 409")
    expires_at: str = Field(description="RFC 3339; redeeming later is 410")


class ScoreResult(BaseModel):
    user_id: UserId
    score: int = Field(ge=0, le=2**53 - 1)
    rank: int = Field(ge=1)


class BoardScoreResult(BaseModel):
    user_id: UserId
    board: BoardId
    score: Score
    rank: int = Field(ge=1)


class BoardDefinition(BaseModel):
    """What ``PUT /admin/boards/{board}`` takes: a board without its id."""

    model_config = ConfigDict(extra="forbid", strict=True)
    title: str = Field(pattern=r"^[^\x00-\x1f\x7f]{1,128}$", examples=["Speedrun"],
                       description="1-128 characters, no control characters")
    sort: Literal["desc", "asc"] = "desc"
    operator: Literal["increment", "best", "set"] = "increment"
    reset: Literal["never", "hour", "day", "week", "month"] = "never"
    timezone: str = Field(default="UTC", min_length=1, max_length=64,
                          examples=["Europe/Berlin"], description="an IANA time zone")


class BoardView(BaseModel):
    id: BoardId
    title: str
    sort: Literal["desc", "asc"]
    operator: Literal["increment", "best", "set"]
    reset: Literal["never", "hour", "day", "week", "month"]
    timezone: str
    season: int = Field(ge=1)
    season_started_at: str = Field(description="RFC 3339")
    next_reset_at: str | None = Field(description="RFC 3339; null for a board that never resets")
    entries: int = Field(ge=0)


class SeasonView(BaseModel):
    season: int = Field(ge=1)
    started_at: str = Field(description="RFC 3339")
    ended_at: str | None = Field(description="RFC 3339; null for the current season")


class RanksRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    user_ids: list[UserId] = Field(min_length=1, max_length=100)


class UserBoardEntry(BaseModel):
    board: BoardId
    season: int = Field(ge=1)
    rank: int = Field(ge=1)
    score: Score


class LedgerRow(BaseModel):
    id: int
    board: BoardId
    delta: int = Field(description="an increment's points; a best or set board's submitted "
                       "score; a revert's change")
    at: str = Field(description="RFC 3339")
    source: str = Field(examples=["increment", "action:demo:Jx1a2b3c", "revert:root"])


class EventRow(BaseModel):
    at: str = Field(description="RFC 3339")
    kind: str = Field(examples=["other_user", "flagged"])
    detail: str


class AdminBoardScore(BaseModel):
    board: BoardId
    score: int = Field(description="in the board's current season")


class AdminUserView(BaseModel):
    user_id: str
    name: str
    score: int = Field(ge=0)
    rank: int | None = Field(description="null while banned or without a score")
    banned: bool
    flags: list[str]
    boards: list[AdminBoardScore] = Field(description="every board the user has an entry on "
                                          "(beyond API.md: the view across boards)")
    ledger: list[LedgerRow] = Field(description="newest first, at most 100")
    events: list[EventRow] = Field(description="newest first, at most 100")


RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"


class RevertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: str = Field(description="RFC 3339 with a zone", examples=["2026-11-27T10:00:00Z"],
                       json_schema_extra={"format": "date-time"})
    board: BoardId | None = Field(default=None,
                                  description="one board; without it, every board's season")


class RevertResult(BaseModel):
    user_id: str
    score: int = Field(ge=0)
    reverted: int = Field(ge=0, description="ledger entries undone")


class SuspiciousUser(BaseModel):
    user_id: str
    reasons: list[str]
    since: str = Field(description="RFC 3339")


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    store: str = Field(examples=["up"])
    redis: Literal["up", "down"] | None = Field(
        default=None, description="Only when Redis is configured; down is still ready")


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
        }
        for status in statuses
    }


_DESCRIPTIONS = {
    400: "Malformed request: HTTP the server cannot parse (a bad header, a bad "
    "Content-Length), malformed JSON, or an invalid Idempotency-Key",
    401: "No token, or the token is not valid",
    403: "The token may not change this user's score or redeem this ticket; or a plain "
    "increment where actions are required",
    404: "Not found: no such board, user, season or action ticket",
    409: "Idempotency-Key in flight, the total would pass 2^53 - 1, a ticket already "
    "redeemed or redeemed too early, or a board change that is not allowed",
    410: "The action ticket has expired",
    413: "Body over 4 KiB",
    415: "Body is not application/json",
    422: "A field is missing, extra, of the wrong type or out of range (the wrong score "
    "field for the board); an unknown action kind; an Idempotency-Key reused with another "
    "request; a bad limit, cursor or window",
    429: "Over the rate limit (see Retry-After); too many failed authentications from this "
    "address; or too many live connections from this address",
    431: "Request head over 16 KiB",
    503: "Storage unavailable (nothing was stored), or no room for another live connection",
}
