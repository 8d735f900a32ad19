"""A board's seasons: the list, and any season's standings and entries.

The current season is the live board (its reads change; ``no-cache`` with an ETag). A
closed season's are its stored final standings, which never change: ``immutable``,
cacheable for a year, with an ETag. A season that has not begun is 404.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from scoreboard.api.boards import _board, _json, _service
from scoreboard.api.schemas import ScoreEntry, SeasonView, problem_responses
from scoreboard.cursors import CursorCodec
from scoreboard.errors import NotFound, Unprocessable
from scoreboard.etags import etag_of, none_match
from scoreboard.model import Board, rfc3339
from scoreboard.service import Service

seasons_router = APIRouter(tags=["seasons"])

IMMUTABLE = "public, max-age=31536000, immutable"
_JSON = "application/json"
_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified since the ETag sent"}}
Limit = Annotated[int, Query(ge=1, le=100)]


def _season_number(board: Board, text: str) -> int:
    """A season of the board that has begun; 404 otherwise."""
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and 1 <= int(text)
            <= board.season):
        raise NotFound(f"season {text[:16]!r} of board {board.id!r} has not begun",
                       "unknown_season")
    return int(text)


def _answer(request: Request, body: bytes, etag: str, cache: str,
            link: str | None = None) -> Response:
    headers = {"etag": etag, "cache-control": cache}
    if link is not None:
        headers["link"] = link
    if none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=_JSON, headers=headers)


def _codec(service: Service) -> CursorCodec:
    codec = service.reads.cursors
    if codec is None:
        raise Unprocessable("after is not a cursor this server made", "bad_cursor")
    return codec


@seasons_router.get("/boards/{board}/seasons", response_model=list[SeasonView],
                    responses={**_NOT_MODIFIED, **problem_responses(404)})
async def list_seasons(board: str, request: Request) -> Response:
    """The board's seasons, newest first; the current one has no end."""
    found = await _board(request, board)
    seasons = await _service(request).store.seasons(found.id)
    return _json([{"season": s.season, "started_at": rfc3339(s.started_ms),
                   "ended_at": None if s.ended_ms is None else rfc3339(s.ended_ms)}
                  for s in seasons if s.season <= found.season], request, True)


@seasons_router.get("/boards/{board}/seasons/{season}/scores", response_model=list[ScoreEntry],
                    responses={**_NOT_MODIFIED, **problem_responses(404, 422, 503)})
async def season_scores(board: str, season: str, request: Request, limit: Limit = 10,
                        after: str | None = None) -> Response:
    """A season's standings, best first, paged like the board's (``Link: rel="next"``). A
    closed season's are final and immutable."""
    service = _service(request)
    found = await _board(request, board)
    number = _season_number(found, season)
    path = request.url.path
    if number == found.season:
        place = None if after is None else _codec(service).decode(found, after)
        page = await service.reads.page(found, limit, place)
        link = None if page.next_cursor is None else (
            f'<{path}?limit={limit}&after={page.next_cursor}>; rel="next"')
        return _answer(request, page.body, page.etag, "no-cache", link)
    closed = await service.standings.closed(found, number)
    after_rank = 0 if after is None else _codec(service).decode_rank(found.id, number, after)
    final = await service.standings.page(found, closed, limit, after_rank)
    link = None
    if final.last_rank is not None:
        cursor = _codec(service).encode_rank(found.id, number, final.last_rank)
        link = f'<{path}?limit={limit}&after={cursor}>; rel="next"'
    return _answer(request, final.body, final.etag, IMMUTABLE, link)


@seasons_router.get("/boards/{board}/seasons/{season}/users/{user_id}",
                    response_model=ScoreEntry,
                    responses={**_NOT_MODIFIED, **problem_responses(404, 503)})
async def season_user(board: str, season: str, user_id: str, request: Request) -> Response:
    """A user's rank and score in a season; 404 without an entry."""
    service = _service(request)
    found = await _board(request, board)
    number = _season_number(found, season)
    if number == found.season:
        return _json((await service.reads.entry(found.id, user_id)).as_dict(), request, True)
    closed = await service.standings.closed(found, number)
    ranked = await service.standings.standing(found, closed, user_id)
    body = orjson.dumps(ranked.as_dict())
    return _answer(request, body, etag_of(body), IMMUTABLE)
