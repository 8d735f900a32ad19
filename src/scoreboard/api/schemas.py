"""Public JSON shapes, for the OpenAPI description and for typed responses."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

UserId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@|-]{1,128}$", examples=["alice"])]


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
    400: "Malformed JSON, or an invalid Idempotency-Key",
    401: "No token, or the token is not valid",
    403: "The token may not change this user's score or redeem this ticket; or a plain "
    "increment where actions are required",
    404: "Not found",
    409: "Idempotency-Key in flight, the total would pass 2^53 - 1, or a ticket already "
    "redeemed or redeemed too early",
    410: "The action ticket has expired",
    413: "Body over 4 KiB",
    415: "Body is not application/json",
    422: "A field is missing, extra, of the wrong type or out of range",
    429: "Over the rate limit (see Retry-After), or too many live connections from this address",
    431: "Request head over 16 KiB",
    503: "Storage unavailable (nothing was stored), or no room for another live connection",
}
