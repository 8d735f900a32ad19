"""The OpenAPI description of the hot routes, which the framework does not see.

``GET /scores`` and ``POST /score`` are plain ASGI apps (see ``api.hot``); their
description is written here from the same pydantic models the rest of the API uses.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from scoreboard.api.schemas import (
    ActionRequest,
    ActionTicket,
    BoardDefinition,
    BoardScoreResult,
    Problem,
    RanksRequest,
    RevertRequest,
    ScoreEntry,
    ScoreResult,
    problem_responses,
)
from scoreboard.schedule import timezones

_REF = "#/components/schemas/"


def _json(ref: str, description: str, array: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"$ref": _REF + ref}
    if array:
        schema = {"type": "array", "items": schema}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


USER_ID_PATTERN = "^[A-Za-z0-9_.:@|-]{1,128}$"

# Written out: exactly one of two optional fields is beyond what a pydantic model says.
SCORE_UPDATE: dict[str, Any] = {
    "title": "ScoreUpdate",
    "type": "object",
    "additionalProperties": False,
    "required": ["user_id"],
    "properties": {
        "user_id": {"type": "string", "pattern": USER_ID_PATTERN},
        "increment": {
            "type": "integer", "minimum": 1,
            "description": "1 to SCOREBOARD_MAX_INCREMENT (default 100); refused with 403 "
            "when SCOREBOARD_REQUIRE_ACTION=true (administrators excepted)",
        },
        "action_id": {
            "type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$",
            "description": "a ticket from POST /actions: redeems it for its points, once",
        },
    },
    "oneOf": [{"required": ["increment"]}, {"required": ["action_id"]}],
}

HOT_PATHS: dict[str, Any] = {
    "/scores": {
        "get": {
            "summary": "Top scores, best first",
            "description": "Equal scores are ordered by who reached that score first. "
            "Carries an ETag; a matching If-None-Match gets 304.",
            "operationId": "get_scores",
            "tags": ["scores"],
            "parameters": [{
                "name": "limit", "in": "query", "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            }, {
                "name": "If-None-Match", "in": "header", "required": False,
                "schema": {"type": "string"},
            }],
            "responses": {
                "200": _json("ScoreEntry", "The top scores", array=True),
                "304": {"description": "Not modified since the ETag sent"},
                **problem_responses(422),
            },
        }
    },
    "/scores/stream": {
        "get": {
            "summary": "The top 10, live (Server-Sent Events)",
            "description": "At once on connect: `event: scores`, `id: <version>`, `data: <the "
            "GET /scores array>`; then one such event whenever the top 10 changes, coalesced "
            "to one per SCOREBOARD_PUSH_INTERVAL_MS; a `: ping` comment at least every 15 s. "
            "The version only grows. A reconnect (any Last-Event-ID) starts with the current "
            "snapshot. The same messages are available as WebSocket text frames at "
            "`/scores/ws`: `{\"type\": \"scores\", \"version\": N, \"scores\": [...]}`.",
            "operationId": "stream_scores",
            "tags": ["live"],
            "responses": {
                "200": {"description": "An endless event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                **problem_responses(429, 503),
            },
        }
    },
    "/actions": {
        "post": {
            "summary": "Start an action: a single-use ticket whose points the server decides",
            "description": "Redeem the ticket with POST /score {user_id, action_id} once the "
            "action is done: not before `not_before`, not after `expires_at`, only for the "
            "user it was issued to, exactly once. Action kinds come from SCOREBOARD_ACTIONS "
            "(default: `demo`, 10 points, at least 1 s, valid 600 s). Rate limited per user "
            "like POST /score, separately.",
            "operationId": "post_action",
            "tags": ["scores"],
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF + "ActionRequest"}}},
            },
            "responses": {
                "201": _json("ActionTicket", "The ticket"),
                **problem_responses(400, 401, 403, 413, 415, 422, 429, 503),
            },
        }
    },
    "/score": {
        "post": {
            "summary": "Add to a user's score",
            "description": "Two modes: a plain `increment` (any signed-in user may script "
            "these within the rate limit), or `action_id`, a ticket from POST /actions whose "
            "points the server decides; SCOREBOARD_REQUIRE_ACTION=true allows only the "
            "second. Answered 200 only after the update is durably committed. "
            "An Idempotency-Key (1-255 printable ASCII characters) makes retries safe: "
            "a repeat with the same body replays the first response "
            "(Idempotent-Replayed: true).",
            "operationId": "post_score",
            "tags": ["scores"],
            "security": [{"bearer": []}],
            "parameters": [{
                "name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "pattern": "^[ -~]{1,255}$"},
            }],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF + "ScoreUpdate"}}},
            },
            "responses": {
                "200": _json("ScoreResult", "Committed; the user's new total and rank"),
                **problem_responses(400, 401, 403, 404, 409, 410, 413, 415, 422, 429, 503),
            },
        }
    },
}


BOARD_ID_PATTERN = "^[a-z0-9_-]{1,64}$"
_BOARD = {"name": "board", "in": "path", "required": True, "example": "default",
          "schema": {"type": "string", "pattern": BOARD_ID_PATTERN}}
_AFTER = {"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
          "description": "the cursor of the Link rel=\"next\" of the page before"}
_LINK = {"Link": {"description": '</...?limit=N&after=CURSOR>; rel="next", while entries '
                  "follow", "schema": {"type": "string"}}}

# A board's write takes the field its operator takes: written out, as ScoreUpdate is.
BOARD_SCORE_UPDATE: dict[str, Any] = {
    "title": "BoardScoreUpdate",
    "type": "object",
    "additionalProperties": False,
    "required": ["user_id"],
    "properties": {
        "user_id": {"type": "string", "pattern": USER_ID_PATTERN},
        "increment": {"type": "integer", "minimum": 1,
                      "description": "on an increment board: as POST /score's"},
        "score": {"type": "integer", "minimum": 0, "maximum": 2**53 - 1,
                  "description": "on a best or set board: the score submitted"},
        "action_id": SCORE_UPDATE["properties"]["action_id"],
    },
    "oneOf": [{"required": ["increment"]}, {"required": ["score"]},
              {"required": ["action_id"]}],
}


def _board_paths() -> dict[str, Any]:
    """``/boards/{board}/...``: the hot routes of any board, described like the default's."""
    scores = copy.deepcopy(HOT_PATHS["/scores"]["get"])
    scores.update(summary="A board's standings, best first, a page at a time",
                  operationId="get_board_scores", tags=["boards"])
    scores["parameters"] = [_BOARD, *scores["parameters"]]
    scores["responses"].update(problem_responses(404, 422))
    score = copy.deepcopy(HOT_PATHS["/score"]["post"])
    score.update(summary="Write a user's score on a board (by its operator)",
                 operationId="post_board_score", tags=["boards"])
    score["description"] = ("As POST /score, with the field the board's operator takes: "
                            "`increment`, or `score` on a best or set board (the wrong one "
                            "is 422); or an `action_id` of this board. 404 for an unknown "
                            "board, after authentication and the rate limit.")
    score["parameters"] = [_BOARD, *score["parameters"]]
    score["requestBody"] = {"required": True, "content": {"application/json": {
        "schema": {"$ref": _REF + "BoardScoreUpdate"}}}}
    score["responses"]["200"] = _json("BoardScoreResult", "Committed; the user's new score "
                                      "and rank on the board")
    stream = copy.deepcopy(HOT_PATHS["/scores/stream"]["get"])
    stream.update(summary="A board's top 10, live (Server-Sent Events)",
                  operationId="stream_board", tags=["boards"])
    stream["parameters"] = [_BOARD]
    stream["responses"].update(problem_responses(404))
    return {"/boards/{board}/scores": {"get": scores},
            "/boards/{board}/score": {"post": score},
            "/boards/{board}/stream": {"get": stream}}


def install_openapi(app: FastAPI, max_increment: int, action_kinds: list[str]) -> None:
    """Make ``app.openapi()`` include the hot routes and this server's limits, computed once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (ScoreEntry, ScoreResult, Problem, ActionRequest, ActionTicket,
                          RevertRequest, BoardScoreResult, BoardDefinition, RanksRequest):
                schemas[model.__name__] = model.model_json_schema(
                    ref_template=_REF + "{model}", mode="serialization"
                )
            schemas["ScoreUpdate"] = copy.deepcopy(SCORE_UPDATE)
            schemas["ScoreUpdate"]["properties"]["increment"]["maximum"] = max_increment
            schemas["BoardScoreUpdate"] = copy.deepcopy(BOARD_SCORE_UPDATE)
            schemas["BoardScoreUpdate"]["properties"]["increment"]["maximum"] = max_increment
            schemas["ActionRequest"]["properties"]["kind"]["enum"] = action_kinds
            schemas["BoardDefinition"]["properties"]["timezone"]["enum"] = sorted(timezones())
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            schema["paths"] = {**HOT_PATHS, **_board_paths(), **schema["paths"]}
            _tighten(schema["paths"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _tighten(paths: dict[str, Any]) -> None:
    """Say what the framework cannot see: id patterns, admin security, errors as problems."""
    patterns = {"user_id": USER_ID_PATTERN, "board": BOARD_ID_PATTERN}
    for path, item in paths.items():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in patterns and parameter["in"] == "path":
                    parameter["schema"] = {"type": "string",
                                           "pattern": patterns[parameter["name"]]}
            if path.startswith("/admin"):
                operation["security"] = [{"bearer": []}]
            responses = operation["responses"]
            # Any request can be malformed HTTP (a bad header or Content-Length): 400.
            # (The hand-written operations key their responses by int, FastAPI's by str.)
            if 400 not in responses and "400" not in responses:
                responses["400"] = problem_responses(400)[400]
            if "422" in responses and "HTTPValidationError" in str(responses["422"]):
                # The framework's validation errors are answered as problems (routes.py).
                responses["422"] = problem_responses(422)[422]
        if path in ("/users/{user_id}", "/boards/{board}", "/boards/{board}/users/{user_id}",
                    "/users/{user_id}/boards"):
            item["get"]["responses"].pop("422", None)  # plain strings: nothing to validate
    paths["/scores"]["get"]["parameters"].append(_AFTER)
    paths["/scores"]["get"]["responses"]["200"]["headers"] = _LINK
    paths["/boards/{board}/scores"]["get"]["parameters"].append(_AFTER)
    paths["/boards/{board}/scores"]["get"]["responses"]["200"]["headers"] = _LINK
