"""Boards through the framework: the list, one board, a user's entry and neighbours, a
friends list's ranks, a user's entries on every board. (A board's scores and writes are
plain ASGI apps: ``api/hot.py``.)"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from scoreboard.api import body as checks
from scoreboard.api.schemas import (
    BoardView,
    ScoreEntry,
    UserBoardEntry,
    problem_responses,
)
from scoreboard.errors import NotFound, Unprocessable
from scoreboard.etags import etag_of, none_match
from scoreboard.model import Board, is_board_id, is_user_id, rfc3339
from scoreboard.seasons import due_at
from scoreboard.service import Service

boards_router = APIRouter(tags=["boards"])

_NO_CACHE = {"cache-control": "no-cache"}
_JSON = "application/json"
Window = Annotated[int, Query(ge=0, le=50)]


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def board_view(service: Service, board: Board) -> dict[str, Any]:
    spec = board.spec
    following = due_at(board)  # when the current season ends: the next reset
    return {
        "id": spec.id, "title": spec.title, "sort": spec.sort, "operator": spec.operator,
        "reset": spec.reset, "timezone": spec.timezone, "season": board.season,
        "season_started_at": rfc3339(board.season_started_ms),
        "next_reset_at": None if following is None else rfc3339(following),
        "entries": await service.reads.count(spec.id),
    }


def _json(value: object, request: Request | None = None, cache: bool = False) -> Response:
    """JSON; with ``cache`` an ETag and ``no-cache``, and a 304 for a matching If-None-Match."""
    body = orjson.dumps(value)
    if not cache:
        return Response(body, media_type=_JSON, headers={"cache-control": "no-store"})
    etag = etag_of(body)
    headers = {**_NO_CACHE, "etag": etag}
    if request is not None and none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=_JSON, headers=headers)


async def _board(request: Request, board_id: str) -> Board:
    if not is_board_id(board_id):
        raise NotFound(f"no board {board_id[:64]!r}", "unknown_board")
    return await _service(request).board(board_id)


@boards_router.get("/boards", response_model=list[BoardView])
async def list_boards(request: Request) -> Response:
    """Every board, ordered by id, with its season and the time of its next reset."""
    service = _service(request)
    return _json([await board_view(service, b) for b in service.boards.all()], request, True)


@boards_router.get("/boards/{board}", response_model=BoardView, responses=problem_responses(404))
async def get_board(board: str, request: Request) -> Response:
    return _json(await board_view(_service(request), await _board(request, board)), request, True)


@boards_router.get("/boards/{board}/users/{user_id}", response_model=ScoreEntry,
                   responses={304: {"description": "Not modified since the ETag sent"},
                              **problem_responses(404)})
async def get_board_user(board: str, user_id: str, request: Request,
                         if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """A user's rank and score on the board; 404 without an entry."""
    found = await _board(request, board)
    ranked = await _service(request).reads.entry(found.id, user_id)
    return _json(ranked.as_dict(), request, True)


@boards_router.get("/boards/{board}/users/{user_id}/around", response_model=list[ScoreEntry],
                   responses=problem_responses(404, 422))
async def get_around(board: str, user_id: str, request: Request, above: Window = 5,
                     below: Window = 5) -> Response:
    """The entries around the user, the user included, best first; the window slides at
    either end to hold ``above + below + 1`` entries where the board has them."""
    found = await _board(request, board)
    window = await _service(request).reads.around(found.id, user_id, above, below)
    return _json([e.as_dict() for e in window], request, True)


@boards_router.post(
    "/boards/{board}/ranks", response_model=list[ScoreEntry],
    responses=problem_responses(400, 404, 413, 415, 422),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/RanksRequest"}}}}},
)
async def post_ranks(board: str, request: Request) -> Response:
    """The entries of those users that have one, best first, each with its rank on the
    whole board (a friends list). No token needed."""
    found = await _board(request, board)
    checks.check_media_type(request.headers.get("content-type"))
    fields = checks.json_object(checks.parse_json(await request.body()), {"user_ids": True})
    users = fields["user_ids"]
    if not isinstance(users, list) or not 1 <= len(users) <= 100:
        raise Unprocessable("user_ids must be a list of 1 to 100 user ids", "bad_user_ids")
    ids = [checks.user_id_field(u) for u in users]
    ranked = await _service(request).reads.ranks(found.id, ids)
    return _json([e.as_dict() for e in ranked])


@boards_router.get("/users/{user_id}/boards", response_model=list[UserBoardEntry],
                   responses=problem_responses(404))
async def get_user_boards(user_id: str, request: Request) -> Response:
    """The user's entry on every board that has one, ordered by board id."""
    if not is_user_id(user_id):
        raise NotFound("no such user", "unknown_user")
    service = _service(request)
    found = await service.reads.user_boards(service.boards.all(), user_id)
    return _json([{"board": b.id, "season": b.season, "rank": r.rank, "score": r.score}
                  for b, r in found], request, True)

