"""Administration: a user's record, ban / unban, revert, the flagged users; boards and
their resets.

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
from fastapi.responses import JSONResponse, Response

from scoreboard.api import body as checks
from scoreboard.api.authn import authenticate, authorization_headers, client_address
from scoreboard.api.boards import board_view
from scoreboard.api.schemas import (
    RFC3339,
    AdminUserView,
    BoardView,
    RevertResult,
    SuspiciousUser,
    problem_responses,
)
from scoreboard.auth import Identity, TokenVerifier
from scoreboard.errors import Conflict, Forbidden, NotFound, Unprocessable
from scoreboard.model import (
    DEFAULT_BOARD,
    OPERATORS,
    RESETS,
    SORTS,
    BoardSpec,
    is_board_id,
    is_user_id,
    rfc3339,
)
from scoreboard.ratelimit import RateLimits
from scoreboard.schedule import is_timezone
from scoreboard.service import AdminView, Service


async def require_admin(request: Request) -> Identity:
    verifier: TokenVerifier = request.app.state.verifier
    limits: RateLimits = request.app.state.limits
    who = await authenticate(verifier, limits, client_address(request.scope),
                             authorization_headers(request.scope))
    if not who.admin:
        service: Service = request.app.state.service
        service.writes.refused(who.sub, "not_admin")
        raise Forbidden("administrators only", "not_admin")
    return who


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


Admin = Annotated[Identity, Depends(require_admin)]
Parts = Annotated[Service, Depends(get_service)]

admin_router = APIRouter(prefix="/admin", tags=["administration"],
                         responses=problem_responses(401, 403, 404, 422, 429))


@admin_router.get("/users/{user_id}", response_model=AdminUserView)
async def view_user(user_id: str, who: Admin, service: Parts) -> JSONResponse:
    """The user's score, rank, ban, flags, newest ledger entries and security events."""
    await service.writes.moderate(who.sub, "view", _user(user_id))
    return _view(user_id, await service.admin_view(user_id))


@admin_router.post("/users/{user_id}/ban", response_model=AdminUserView)
async def ban(user_id: str, who: Admin, service: Parts) -> JSONResponse:
    """Take the user off every board and refuse their writes (403) until unbanned."""
    await service.writes.moderate(who.sub, "ban", _user(user_id))
    return _view(user_id, await service.admin_view(user_id))


@admin_router.post("/users/{user_id}/unban", response_model=AdminUserView)
async def unban(user_id: str, who: Admin, service: Parts) -> JSONResponse:
    await service.writes.moderate(who.sub, "unban", _user(user_id))
    return _view(user_id, await service.admin_view(user_id))


@admin_router.post(
    "/users/{user_id}/revert", response_model=RevertResult,
    responses=problem_responses(400, 413, 415),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/RevertRequest"}}}}},
)
async def revert(user_id: str, request: Request, who: Admin, service: Parts) -> JSONResponse:
    """Undo the user's increments at or after ``since`` (RFC 3339), with one ledger entry."""
    checks.check_media_type(request.headers.get("content-type"))
    fields = checks.json_object(checks.parse_json(await request.body()),
                                {"since": True, "board": False})
    since = _moment(fields["since"])
    board = fields.get("board")
    if board is not None and not is_board_id(board):
        raise Unprocessable("board must be a board id", "bad_board")
    if board is not None:
        await service.board(board)  # 404 for one that is not there
    done = await service.writes.moderate(who.sub, "revert", _user(user_id), since, board)
    entry = await service.ranking.get(board or DEFAULT_BOARD, user_id)
    return JSONResponse({"user_id": user_id, "score": entry.score if entry else 0,
                         "reverted": done.reverted}, headers=_NO_STORE)


@admin_router.get("/suspicious", response_model=list[SuspiciousUser])
async def suspicious(who: Admin, service: Parts) -> JSONResponse:
    """Users flagged by detection, longest-flagged first."""
    await service.writes.moderate(who.sub, "suspicious", "*")
    return JSONResponse([
        {"user_id": flag.user_id, "reasons": flag.reasons, "since": rfc3339(flag.since_ms)}
        for flag in await service.suspicious()
    ], headers=_NO_STORE)


_NO_STORE = {"cache-control": "no-store"}
_TITLE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")


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
    default = next((e for e in record.entries if e.board == DEFAULT_BOARD), None)
    return JSONResponse({
        "user_id": user_id,
        "name": record.name or user_id,
        "score": default.score if default else 0,
        "rank": view.rank,
        "banned": record.banned,
        "flags": view.flags,
        "boards": [{"board": e.board, "score": e.score} for e in record.entries],
        "ledger": [{"id": e.id, "board": e.board, "delta": e.amount, "at": rfc3339(e.at_ms),
                    "source": e.source} for e in record.ledger],
        "events": [{"at": rfc3339(e.at_ms), "kind": e.kind, "detail": e.detail}
                   for e in record.events],
    }, headers=_NO_STORE)


# -- boards


@admin_router.put(
    "/boards/{board}", response_model=BoardView, status_code=201,
    responses={200: {"description": "The board existed: its title changed (or not)",
                     "content": {"application/json": {"schema": {
                         "$ref": "#/components/schemas/BoardView"}}}},
               **problem_responses(400, 409, 413, 415)},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/BoardDefinition"}}}}},
)
async def put_board(board: str, request: Request, who: Admin, service: Parts) -> Response:
    """Create the board (201), or change the title of the one that exists (200). Its
    sort, operator, reset and timezone never change once made (409)."""
    if not is_board_id(board):
        raise NotFound("no such board: ids are 1-64 of a-z 0-9 _ -", "unknown_board")
    checks.check_media_type(request.headers.get("content-type"))
    spec = board_spec(board, checks.parse_json(await request.body()))
    done = await service.writes.change_board(who.sub, "create", spec)
    if done.outcome in ("exists", "deleted", "full"):
        raise Conflict(_REFUSED[done.outcome], f"board_{done.outcome}")
    assert done.board is not None
    status = 201 if done.outcome == "created" else 200
    return JSONResponse(await board_view(service, done.board), status, headers=_NO_STORE)


@admin_router.delete("/boards/{board}", status_code=204,
                     responses={204: {"description": "Deleted"}, **problem_responses(409)})
async def delete_board(board: str, who: Admin, service: Parts) -> Response:
    """The board leaves every listing and read; its id is never used again; its ledger
    stays. The default board cannot be deleted (409)."""
    if not is_board_id(board):
        raise NotFound("no such board", "unknown_board")
    done = await service.writes.change_board(who.sub, "delete", BoardSpec(board, board))
    if done.outcome == "protected":
        raise Conflict("the default board cannot be deleted", "board_protected")
    if done.outcome == "missing":
        raise NotFound(f"no board {board!r}", "unknown_board")
    return Response(status_code=204, headers=_NO_STORE)


@admin_router.post("/boards/{board}/reset", response_model=BoardView,
                   responses=problem_responses(404))
async def reset_board(board: str, who: Admin, service: Parts) -> Response:
    """Close the board's season now and open the next, empty: the board, in its new
    season. Live clients get the new season; the closed one's standings are final."""
    if not is_board_id(board):
        raise NotFound("no such board", "unknown_board")
    done = await service.writes.reset(who.sub, board)
    if done.board is None:
        raise NotFound(f"no board {board!r}", "unknown_board")
    return JSONResponse(await board_view(service, done.board), headers=_NO_STORE)


_REFUSED = {
    "exists": "the board exists with another sort, operator, reset or timezone; only its "
              "title can change",
    "deleted": "this board id was used by a deleted board and cannot be used again",
    "full": "there are as many boards as SCOREBOARD_MAX_BOARDS allows",
}


def board_spec(board_id: str, value: object) -> BoardSpec:
    """A board definition from a PUT body, strictly."""
    fields = checks.json_object(value, {"title": True, "sort": False, "operator": False,
                                        "reset": False, "timezone": False})
    title = fields["title"]
    if not isinstance(title, str) or not _TITLE.fullmatch(title):
        raise Unprocessable("title must be 1 to 128 characters, none a control character",
                            "bad_title")
    choices = {"sort": SORTS, "operator": OPERATORS, "reset": RESETS}
    chosen: dict[str, Any] = {}
    for name, allowed in choices.items():
        picked = fields.get(name, allowed[0])
        if picked not in allowed:
            raise Unprocessable(f"{name} must be one of {', '.join(allowed)}", f"bad_{name}")
        chosen[name] = picked
    timezone = fields.get("timezone", "UTC")
    if not is_timezone(timezone):
        raise Unprocessable("timezone must be an IANA time zone, like Europe/Berlin",
                            "bad_timezone")
    return BoardSpec(board_id, title, chosen["sort"], chosen["operator"],
                     chosen["reset"], timezone)
