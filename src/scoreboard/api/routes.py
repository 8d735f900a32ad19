"""The framework's routes: user lookup, health, readiness, metrics; and its error handlers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from scoreboard.api.problems import PROBLEM_TYPE, error_headers, problem_body
from scoreboard.api.schemas import Health, Readiness, ScoreEntry, problem_responses
from scoreboard.errors import ScoreboardError, StoreUnavailable
from scoreboard.etags import etag_of, none_match
from scoreboard.metrics import Metrics
from scoreboard.model import DEFAULT_BOARD
from scoreboard.service import Service as ScoreService


def get_service(request: Request) -> ScoreService:
    service: ScoreService = request.app.state.service
    return service


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


Service = Annotated[ScoreService, Depends(get_service)]

router = APIRouter()


@router.get("/users/{user_id}", response_model=ScoreEntry, tags=["scores"],
            responses={304: {"description": "Not modified since the ETag sent"},
                       **problem_responses(404)})
async def get_user(user_id: str, service: Service,
                   if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """A user's score and rank; 404 for a user with no score. Carries an ETag; a
    matching If-None-Match gets 304."""
    ranked = await service.reads.entry(DEFAULT_BOARD, user_id)
    body = orjson.dumps(ranked.as_dict())
    etag = etag_of(body)
    headers = {"cache-control": "no-cache", "etag": etag}
    if none_match(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/healthz", response_model=Health, tags=["operations"])
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, tags=["operations"],
            responses=problem_responses(503))
async def readyz(request: Request, service: Service) -> Response:
    """200 while the store answers, 503 when it does not; names each dependency's state.
    Redis down degrades the service, it does not stop it: still 200."""
    link = request.app.state.redis
    redis = {} if link is None else {"redis": "up" if link.up else "down"}
    try:
        await service.ready()
    except StoreUnavailable as error:
        body = problem_body(503, error.detail, store="down", **redis)
        return Response(body, 503, media_type=PROBLEM_TYPE)
    return JSONResponse({"status": "ready", "store": "up", **redis})


@router.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}})
async def metrics(metrics: Annotated[Metrics, Depends(get_metrics)]) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def install_error_handlers(app: FastAPI) -> None:
    """Every error the framework raises becomes problem+json, never a trace."""

    async def scoreboard_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ScoreboardError)
        headers = {k.decode(): v.decode() for k, v in error_headers(exc)}
        return Response(problem_body(exc.status, exc.detail, exc.title), exc.status,
                        headers=headers, media_type=PROBLEM_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "the request failed"
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            detail = "no such resource"
        if exc.status_code == 405:  # every method of the path, not only its first route's
            headers["Allow"] = ", ".join(_allowed(app, request.scope))
        return Response(problem_body(exc.status_code, detail), exc.status_code,
                        headers=headers, media_type=PROBLEM_TYPE)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return Response(problem_body(422, "; ".join(problems)[:500]), 422,
                        media_type=PROBLEM_TYPE)

    async def server_error(request: Request, exc: Exception) -> Response:
        return Response(problem_body(500, "the server could not answer this request"), 500,
                        media_type=PROBLEM_TYPE)

    app.add_exception_handler(Exception, server_error)
    app.add_exception_handler(ScoreboardError, scoreboard_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def _allowed(app: FastAPI, scope: Scope) -> list[str]:
    methods: set[str] = set()
    for route in _flat(app.router.routes):
        if isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def _flat(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, those of included routers too (they are included without a prefix:
    theirs is in their own paths)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _flat(included.routes)
        else:
            yield route
