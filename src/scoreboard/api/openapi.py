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
    Problem,
    RevertRequest,
    ScoreEntry,
    ScoreResult,
    problem_responses,
)

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


def install_openapi(app: FastAPI, max_increment: int, action_kinds: list[str]) -> None:
    """Make ``app.openapi()`` include the hot routes and this server's limits, computed once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (ScoreEntry, ScoreResult, Problem, ActionRequest, ActionTicket,
                          RevertRequest):
                schemas[model.__name__] = model.model_json_schema(
                    ref_template=_REF + "{model}", mode="serialization"
                )
            schemas["ScoreUpdate"] = copy.deepcopy(SCORE_UPDATE)
            schemas["ScoreUpdate"]["properties"]["increment"]["maximum"] = max_increment
            schemas["ActionRequest"]["properties"]["kind"]["enum"] = action_kinds
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            schema["paths"] = {**HOT_PATHS, **schema["paths"]}
            _tighten(schema["paths"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _tighten(paths: dict[str, Any]) -> None:
    """Say what the framework cannot see: user id patterns, admin security, no 422 here."""
    for path, item in paths.items():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "user_id" and parameter["in"] == "path":
                    parameter["schema"] = {"type": "string", "pattern": USER_ID_PATTERN}
            if path.startswith("/admin"):
                operation["security"] = [{"bearer": []}]
        if path == "/users/{user_id}":
            item["get"]["responses"].pop("422", None)  # a plain string: nothing to validate
