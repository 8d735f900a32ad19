"""CORS for the configured origins only, refusals answered like every other error."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from scoreboard.api.problems import PROBLEM_TYPE, problem_body


class StrictCORS(CORSMiddleware):
    """Starlette's CORS middleware, whose refused preflight (an origin, method or header
    not allowed) is an ``application/problem+json`` 400 instead of plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        detail = bytes(response.body).decode()  # "Disallowed CORS origin, method"
        headers = {name: value for name, value in response.headers.items()
                   if name not in ("content-type", "content-length")}
        return Response(problem_body(400, detail), 400, headers=headers,
                        media_type=PROBLEM_TYPE)
