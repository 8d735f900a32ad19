"""Administration: a user's record, ban / unban, revert, the flagged users.

Every route needs a token with the ``scoreboard:admin`` scope (401 without a valid
token, 403 for any other). The scope is checked right after the token, before the
body is read: nobody else gets to probe the validation. Every action, views included,
is recorded in the audit table in the same transaction as its effect.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from scoreboard.api import body as checks
from scoreboard.api.authn import authenticate, authorization_headers, client_address
from scoreboard.api.routes import Service
from scoreboard.api.schemas import (
    RFC3339,
    AdminUserView,
    RevertResult,
    SuspiciousUser,
    problem_responses,
)
from scoreboard.auth import Identity, TokenVerifier
from scoreboard.errors import Forbidden, NotFound, Unprocessable
from scoreboard.model import is_user_id, rfc3339
from scoreboard.ratelimit import RateLimits
from scoreboard.service import AdminView, ScoreService


async def require_admin(request: Request) -> Identity:
    verifier: TokenVerifier = request.app.state.verifier
    limits: RateLimits = request.app.state.limits
    who = await authenticate(verifier, limits, client_address(request.scope),
                             authorization_headers(request.scope))
    if not who.admin:
        service: ScoreService = request.app.state.service
        service.refused(who.sub, "not_admin")
        raise Forbidden("administrators only", "not_admin")
    return who


Admin = Annotated[Identity, Depends(require_admin)]

admin_router = APIRouter(prefix="/admin", tags=["administration"],
                         responses=problem_responses(401, 403, 404, 422, 429))


@admin_router.get("/users/{user_id}", response_model=AdminUserView)
async def view_user(user_id: str, who: Admin, service: Service) -> JSONResponse:
    """The user's score, rank, ban, flags, newest ledger entries and security events."""
    await service.moderate(who.sub, "view", _user(user_id))
    return _view(user_id, await service.admin_view(user_id))


@admin_router.post("/users/{user_id}/ban", response_model=AdminUserView)
async def ban(user_id: str, who: Admin, service: Service) -> JSONResponse:
    """Take the user off every board and refuse their writes (403) until unbanned."""
    await service.moderate(who.sub, "ban", _user(user_id))
    return _view(user_id, await service.admin_view(user_id))


@admin_router.post("/users/{user_id}/unban", response_model=AdminUserView)
async def unban(user_id: str, who: Admin, service: Service) -> JSONResponse:
    await service.moderate(who.sub, "unban", _user(user_id))
    return _view(user_id, await service.admin_view(user_id))


@admin_router.post(
    "/users/{user_id}/revert", response_model=RevertResult,
    responses=problem_responses(400, 413, 415),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/RevertRequest"}}}}},
)
async def revert(user_id: str, request: Request, who: Admin, service: Service) -> JSONResponse:
    """Undo the user's increments at or after ``since`` (RFC 3339), with one ledger entry."""
    checks.check_media_type(request.headers.get("content-type"))
    fields = checks.json_object(checks.parse_json(await request.body()), {"since": True})
    since = _moment(fields["since"])
    done = await service.moderate(who.sub, "revert", _user(user_id), since)
    score = done.total.total if done.total is not None else 0
    return JSONResponse({"user_id": user_id, "score": score, "reverted": done.reverted},
                        headers=_NO_STORE)


@admin_router.get("/suspicious", response_model=list[SuspiciousUser])
async def suspicious(who: Admin, service: Service) -> JSONResponse:
    """Users flagged by detection, longest-flagged first."""
    await service.moderate(who.sub, "suspicious", "*")
    return JSONResponse([
        {"user_id": flag.user_id, "reasons": flag.reasons, "since": rfc3339(flag.since_ms)}
        for flag in await service.suspicious()
    ], headers=_NO_STORE)


_NO_STORE = {"cache-control": "no-store"}


def _user(user_id: str) -> str:
    if not is_user_id(user_id):
        raise NotFound("no such user", "unknown_user")
    return user_id


def _moment(value: Any) -> int:
    """An RFC 3339 time with a zone, in unix milliseconds."""
    match = re.fullmatch(RFC3339, value) if isinstance(value, str) else None
    if match is not None:
        # fromisoformat takes at most microseconds and wants upper-case T and Z.
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.upper()).replace("Z", "+00:00")
        try:
            return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)
        except ValueError:  # a date that does not exist, like 2026-02-30
            pass
    raise Unprocessable("since must be an RFC 3339 time with a zone, like 2026-11-27T10:00:00Z",
                        "bad_since")



def _view(user_id: str, view: AdminView) -> JSONResponse:
    record = view.record
    total = record.total
    return JSONResponse({
        "user_id": user_id,
        "name": (total.name if total else None) or user_id,
        "score": total.total if total else 0,
        "rank": view.rank,
        "banned": record.banned,
        "flags": view.flags,
        "ledger": [{"id": e.id, "delta": e.delta, "at": rfc3339(e.at_ms), "source": e.source}
                   for e in record.ledger],
        "events": [{"at": rfc3339(e.at_ms), "kind": e.kind, "detail": e.detail}
                   for e in record.events],
    }, headers=_NO_STORE)
