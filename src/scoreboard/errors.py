"""The project's own errors.

Each carries the HTTP status and title it maps to, so one place (``api.problems``)
turns any of them into an ``application/problem+json`` response. ``reason`` is a
short machine name used in logs and metrics; ``detail`` is safe to show a client.

    ScoreboardError
     ├── BadRequest (400)        malformed JSON, bad Idempotency-Key
     ├── Unauthorized (401)      any token problem
     ├── Forbidden (403)         another user's score
     ├── NotFound (404)
     ├── PayloadTooLarge (413)
     ├── UnsupportedMediaType (415)
     ├── Unprocessable (422)     fields: missing, extra, wrong type, out of range
     ├── Conflict (409)          key in flight, total cap, ticket used or too early
     ├── Gone (410)              an expired action ticket
     ├── RateLimited (429)       with retry_after seconds
     ├── HeadersTooLarge (431)
     └── StoreUnavailable (503)  nothing was acknowledged
          ├── StatementFailed      the database refused one update's statement
          └── TransactionConflict  the database gave the transaction up (a deadlock)
"""

from __future__ import annotations


class ScoreboardError(Exception):
    status = 500
    title = "Internal Server Error"
    retry_after: int | None = None  # seconds, for a Retry-After header

    def __init__(self, detail: str, reason: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason or self.title.lower().replace(" ", "_")


class BadRequest(ScoreboardError):
    status = 400
    title = "Bad Request"


class Unauthorized(ScoreboardError):
    status = 401
    title = "Unauthorized"


class Forbidden(ScoreboardError):
    status = 403
    title = "Forbidden"


class NotFound(ScoreboardError):
    status = 404
    title = "Not Found"


class Conflict(ScoreboardError):
    status = 409
    title = "Conflict"


class Gone(ScoreboardError):
    status = 410
    title = "Gone"


class PayloadTooLarge(ScoreboardError):
    status = 413
    title = "Content Too Large"


class UnsupportedMediaType(ScoreboardError):
    status = 415
    title = "Unsupported Media Type"


class Unprocessable(ScoreboardError):
    status = 422
    title = "Unprocessable Content"


class RateLimited(ScoreboardError):
    status = 429
    title = "Too Many Requests"

    def __init__(self, detail: str, retry_after: int, reason: str = "rate_limited") -> None:
        super().__init__(detail, reason)
        self.retry_after = retry_after


class HeadersTooLarge(ScoreboardError):
    status = 431
    title = "Request Header Fields Too Large"


class StoreUnavailable(ScoreboardError):
    status = 503
    title = "Service Unavailable"

    def __init__(self, detail: str = "storage is unavailable; nothing was stored",
                 reason: str = "store_unavailable") -> None:
        super().__init__(detail, reason)


class StatementFailed(StoreUnavailable):
    """The database refused a statement of one update (a constraint): the other updates
    of its batch can be committed without it (``groupcommit`` splits the batch)."""


class TransactionConflict(StoreUnavailable):
    """The database gave the transaction up for a conflict with another (a deadlock, a
    serialization failure): nothing was kept, and running it again may succeed."""


def describe(error: BaseException) -> str:
    """An error as a log detail or start-up message: its kind and message, bounded."""
    return f"{type(error).__name__}: {error}"[:200]
