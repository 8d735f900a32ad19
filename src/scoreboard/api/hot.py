"""A board's scores and writes as plain ASGI apps: the paths every client hits.

``GET /scores`` and ``POST /score`` are the board ``default``'s; ``GET /boards/{board}/
scores`` and ``POST /boards/{board}/score`` any board's. They skip the framework's
dependency injection and model validation (measured to cost more than the rest of the
request) and check the body by hand, strictly. The checks run in the order API.md
gives: size, authentication, rate limit, media type, JSON, fields, authorisation, then
the update itself; an unknown board is a 404 after the rate limit.
"""

from __future__ import annotations

import re

import orjson
import structlog
from starlette.types import Receive, Scope, Send

from scoreboard.api import body as checks
from scoreboard.api.asgi import header, path_board, query, read_body, send_json
from scoreboard.api.authn import authenticate, client_address
from scoreboard.auth import Identity, TokenVerifier
from scoreboard.errors import BadRequest, ScoreboardError, Unprocessable
from scoreboard.etags import none_match
from scoreboard.metrics import Metrics
from scoreboard.model import MAX_TOTAL, Board, Entry, StoredResponse, rfc3339
from scoreboard.ratelimit import RateLimits
from scoreboard.service import Service
from scoreboard.writes import fingerprint

_IDEMPOTENCY_KEY = re.compile(rb"[\x20-\x7e]{1,255}")

security_log = structlog.get_logger("scoreboard.security")


class ScoreRoutes:
    def __init__(self, service: Service, verifier: TokenVerifier, limits: RateLimits,
                 metrics: Metrics, max_increment: int) -> None:
        self._service = service
        self._verifier = verifier
        self._limits = limits
        self._metrics = metrics
        self._max_increment = max_increment

    async def get_scores(self, scope: Scope, receive: Receive, send: Send) -> None:
        board = await self._board(path_board(scope))
        params = query(scope)
        limit = page_limit(params)
        after = self._cursor(board, params)
        page = await self._service.reads.page(board, limit, after)
        headers = [(b"etag", page.etag.encode()), (b"cache-control", b"no-cache")]
        if page.next_cursor is not None:
            link = f'<{scope["path"]}?limit={limit}&after={page.next_cursor}>; rel="next"'
            headers.append((b"link", link.encode()))
        if none_match(header(scope, b"if-none-match"), page.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_json(send, 200, page.body, headers)

    def _cursor(self, board: Board, params: dict[str, str]) -> Entry | None:
        cursor = params.get("after")
        if cursor is None:
            return None
        codec = self._service.reads.cursors
        if codec is None:
            raise Unprocessable("after is not a cursor this server made", "bad_cursor")
        return codec.decode(board, cursor)

    async def _board(self, board_id: str) -> Board:
        board = self._service.boards.get(board_id)
        if board is None:
            board = await self._service.board(board_id)
        return board

    async def post_score(self, scope: Scope, receive: Receive, send: Send) -> None:
        who: Identity | None = None
        board_id = path_board(scope)
        board_route = "path_params" in scope
        try:
            body = await read_body(receive)
            authorizations, content_type, keys = _post_headers(scope)
            who = await self._authenticate(scope, authorizations)
            valid = len(keys) == 1 and _IDEMPOTENCY_KEY.fullmatch(keys[0])
            key = keys[0].decode() if valid else None
            parsed: object = None
            request_print = ""  # identifies a keyed request: its route, board and body
            earlier: StoredResponse | None = None
            if key is not None:
                try:
                    parsed = checks.parse_json(body)
                except BadRequest:
                    pass  # not a replay; the JSON check below answers
                else:
                    request_print = fingerprint(checks.canonical(
                        {"route": "boards" if board_route else "score", "board": board_id,
                         "body": parsed}))
                    earlier = await self._service.writes.replay(who.sub, key, request_print)
            if earlier is None:  # a replay is not counted (API.md)
                await self._service.writes.admit(who.sub)
            checks.check_media_type(content_type)
            if earlier is not None:
                await self._answer(send, earlier, replayed=True)
                return
            board = await self._board(board_id)
            if keys and key is None:
                raise BadRequest(
                    "Idempotency-Key must be sent once, 1-255 printable ASCII characters",
                    "bad_idempotency_key",
                )
            if parsed is None:
                parsed = checks.parse_json(body)
            user_id, amount, action_id = self._fields(board, parsed)
            result = await self._service.writes.add(who, board.id, user_id, amount, action_id,
                                                    key, request_print, board_route)
        except ScoreboardError as error:
            self._refused(scope, "update_refused", who, error)
            raise
        await self._answer(send, result.response, replayed=result.replayed)

    def _fields(self, board: Board, parsed: object) -> tuple[str, int | None, str | None]:
        """The user, and the amount the board's operator takes or a ticket."""
        field = "increment" if board.spec.operator == "increment" else "score"
        fields = checks.json_object(parsed, {"user_id": True, field: False, "action_id": False})
        user_id = checks.user_id_field(fields["user_id"])
        if (field in fields) == ("action_id" in fields):
            raise Unprocessable(f"send exactly one of {field} and action_id",
                                f"{field}_or_action")
        if "action_id" in fields:
            return user_id, None, checks.action_id_field(fields["action_id"])
        if field == "increment":
            return user_id, checks.integer_field(field, fields[field], 1,
                                                 self._max_increment), None
        return user_id, checks.integer_field(field, fields[field], 0, MAX_TOTAL), None

    async def post_action(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /actions``: a ticket for one action; the server decides its points."""
        who: Identity | None = None
        try:
            body = await read_body(receive)
            authorizations, content_type, _ = _post_headers(scope)
            who = await self._authenticate(scope, authorizations)
            await self._service.writes.admit_action(who.sub)
            checks.check_media_type(content_type)
            fields = checks.json_object(checks.parse_json(body), {"kind": True})
            kind = fields["kind"]
            if not isinstance(kind, str):
                raise Unprocessable("kind must be a string", "bad_type")
            ticket = await self._service.writes.issue_ticket(who, kind)
        except ScoreboardError as error:
            self._refused(scope, "action_refused", who, error)
            raise
        await send_json(send, 201, orjson.dumps({
            "action_id": ticket.id, "kind": ticket.kind, "points": ticket.points,
            "not_before": rfc3339(ticket.not_before_ms), "expires_at": rfc3339(ticket.expires_ms),
        }), [])

    def _refused(self, scope: Scope, event: str, who: Identity | None,
                 error: ScoreboardError) -> None:
        """Every refused write is a counted, logged security event."""
        self._metrics.update_refused(error.reason)
        if who is not None:
            self._service.writes.refused(who.sub, error.reason)
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
        await send_json(send, response.status, response.body, headers)


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


def page_limit(params: dict[str, str], default: int = 10) -> int:
    value = params.get("limit")
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 100):
        raise Unprocessable("limit must be an integer from 1 to 100", "bad_limit")
    return int(value)
