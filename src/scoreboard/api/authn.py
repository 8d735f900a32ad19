"""Bearer authentication for every route that needs it, in one place."""

from __future__ import annotations

from starlette.types import Scope

from scoreboard.auth import Identity, TokenVerifier
from scoreboard.errors import Unauthorized
from scoreboard.ratelimit import RateLimits


def authorization_headers(scope: Scope) -> list[bytes]:
    """Every ``Authorization`` header of the request, in order."""
    return [value for name, value in scope["headers"] if name == b"authorization"]


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def authenticate(verifier: TokenVerifier, limits: RateLimits, address: str,
                       authorizations: list[bytes]) -> Identity:
    """Verify the bearer token of a request's ``Authorization`` headers.

    More than one is refused: routes must not disagree about which one counts. A failed
    authentication counts against the client's address; past the address's limit the
    answer is 429 instead of 401. A valid token is never refused here: users who share
    an address (NAT, a proxy) are not locked out by someone else's guesses.
    """
    try:
        if len(authorizations) > 1:
            raise Unauthorized("send one Authorization header", "duplicate_authorization")
        header = authorizations[0].decode("latin-1") if authorizations else None
        return await verifier.verify(header)
    except Unauthorized:
        await limits.check_auth_failures(address)
        await limits.count_auth_failure(address)
        raise
