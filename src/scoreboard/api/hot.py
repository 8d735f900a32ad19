"""``GET /scores`` and ``POST /score`` as plain ASGI apps: the two paths every client hits.

They skip the framework's dependency injection and model validation (measured to
cost more than the rest of the request) and check the body by hand, strictly. The
checks run in the order API.md gives: size, authentication, rate limit, media type,
JSON, fields, authorisation, then the update itself.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import orjson
import structlog
from starlette.types import Receive, Scope, Send

from scoreboard.api import body as checks
from scoreboard.api.authn import authenticate, client_address
from scoreboard.auth import Identity, TokenVerifier
from scoreboard.errors import BadRequest, ScoreboardError, Unprocessable
from scoreboard.etags import none_match
from scoreboard.metrics import Metrics
from scoreboard.model import StoredResponse, rfc3339
from scoreboard.ratelimit import RateLimits
from scoreboard.service import ScoreService, fingerprint

_IDEMPOTENCY_KEY = re.compile(rb"[\x20-\x7e]{1,255}")
_JSON = (b"content-type", b"application/json")
_SCORE_FIELDS = {"user_id": True, "increment": False, "action_id": False}

security_log = structlog.get_logger("scoreboard.security")


class AsgiEndpoint:
    """Lets a bound method serve as a plain ASGI app in a Starlette ``Route``."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


class ScoreRoutes:
    def __init__(self, service: ScoreService, verifier: TokenVerifier, limits: RateLimits,
                 metrics: Metrics, max_increment: int) -> None:
        self._service = service
        self._verifier = verifier
        self._limits = limits
        self._metrics = metrics
        self._max_increment = max_increment

    async def get_scores(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = _limit(scope["query_string"])
        board = await self._service.board(limit)
        etag = board.etag.encode()
        headers = [(b"etag", etag), (b"cache-control", b"no-cache")]
        if none_match(_header(scope, b"if-none-match"), board.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await _send_json(send, 200, board.body, headers)

    async def post_score(self, scope: Scope, receive: Receive, send: Send) -> None:
        who: Identity | None = None
        try:
            body = await _read_body(receive)
            authorizations, content_type, keys = _post_headers(scope)
            who = await self._authenticate(scope, authorizations)
            valid = len(keys) == 1 and _IDEMPOTENCY_KEY.fullmatch(keys[0])
            key = keys[0].decode() if valid else None
            parsed: object = None
            body_print = ""  # identifies the body of a keyed request
            earlier: StoredResponse | None = None
            if key is not None:
                try:
                    parsed = checks.parse_json(body)
                except BadRequest:
                    pass  # not a replay; the JSON check below answers
                else:
                    body_print = fingerprint(checks.canonical(parsed))
                    earlier = await self._service.replay(who.sub, key, body_print)
            if earlier is None:  # a replay is not counted (API.md)
                await self._service.admit(who.sub)
            checks.check_media_type(content_type)
            if earlier is not None:
                await self._answer(send, earlier, replayed=True)
                return
            if keys and key is None:
                raise BadRequest(
                    "Idempotency-Key must be sent once, 1-255 printable ASCII characters",
                    "bad_idempotency_key",
                )
            if parsed is None:
                parsed = checks.parse_json(body)
            fields = checks.json_object(parsed, _SCORE_FIELDS)
            user_id = checks.user_id_field(fields["user_id"])
            if ("increment" in fields) == ("action_id" in fields):
                raise Unprocessable("send exactly one of increment and action_id",
                                    "increment_or_action")
            increment = action_id = None
            if "increment" in fields:
                increment = checks.integer_field("increment", fields["increment"], 1,
                                                 self._max_increment)
            else:
                action_id = checks.action_id_field(fields["action_id"])
            result = await self._service.add(who, user_id, increment, action_id, key,
                                             body_print)
        except ScoreboardError as error:
            self._refused(scope, "update_refused", who, error)
            raise
        await self._answer(send, result.response, replayed=result.replayed)

    async def post_action(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /actions``: a ticket for one action; the server decides its points."""
        who: Identity | None = None
        try:
            body = await _read_body(receive)
            authorizations, content_type, _ = _post_headers(scope)
            who = await self._authenticate(scope, authorizations)
            await self._service.admit_action(who.sub)
            checks.check_media_type(content_type)
            fields = checks.json_object(checks.parse_json(body), {"kind": True})
            kind = fields["kind"]
            if not isinstance(kind, str):
                raise Unprocessable("kind must be a string", "bad_type")
            ticket = await self._service.issue_ticket(who, kind)
        except ScoreboardError as error:
            self._refused(scope, "action_refused", who, error)
            raise
        await _send_json(send, 201, orjson.dumps({
            "action_id": ticket.id, "kind": ticket.kind, "points": ticket.points,
            "not_before": rfc3339(ticket.not_before_ms), "expires_at": rfc3339(ticket.expires_ms),
        }), [])

    def _refused(self, scope: Scope, event: str, who: Identity | None,
                 error: ScoreboardError) -> None:
        """Every refused write is a counted, logged security event."""
        self._metrics.update_refused(error.reason)
        if who is not None:
            self._service.refused(who.sub, error.reason)
        client = scope.get("client")
        security_log.warning(
            event, reason=error.reason, status=error.status,
            sub=who.sub if who else None, client=client[0] if client else None,
        )

    async def _authenticate(self, scope: Scope, authorizations: list[bytes]) -> Identity:
        return await authenticate(self._verifier, self._limits, client_address(scope),
                                  authorizations)

    async def _answer(self, send: Send, response: StoredResponse, replayed: bool) -> None:
        self._metrics.update_accepted(replayed)
        headers = [(b"idempotent-replayed", b"true")] if replayed else []
        await _send_json(send, response.status, response.body, headers)


def _post_headers(scope: Scope) -> tuple[list[bytes], str | None, list[bytes]]:
    """Every Authorization, the Content-Type and every Idempotency-Key, in one pass."""
    content_type = None
    authorizations = []
    keys = []
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorizations.append(value)
        elif name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"idempotency-key":
            keys.append(value)
    return authorizations, content_type, keys


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away", "disconnected")
        if not message.get("more_body", False):
            if not chunks:
                return bytes(message.get("body", b""))
            chunks.append(message.get("body", b""))
            return b"".join(chunks)
        chunks.append(message.get("body", b""))


async def _send_json(send: Send, status: int, body: bytes,
                     headers: list[tuple[bytes, bytes]]) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None



def _limit(query_string: bytes) -> int:
    if not query_string:
        return 10
    limit = 10
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "limit":
            if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 100):
                raise Unprocessable("limit must be an integer from 1 to 100", "bad_limit")
            limit = int(value)
    return limit
