"""Bearer authentication for every route that needs it, in one place."""

from __future__ import annotations

from scoreboard.auth import Identity, TokenVerifier
from scoreboard.errors import Unauthorized
from scoreboard.ratelimit import RateLimits


async def authenticate(verifier: TokenVerifier, limits: RateLimits, address: str,
                       authorization: str | None) -> Identity:
    """Verify the bearer token.

    A failed one counts against the client's address; past the address's limit the
    answer is 429 instead of 401. A valid token is never refused here: users who share
    an address (NAT, a proxy) are not locked out by someone else's guesses.
    """
    try:
        return await verifier.verify(authorization)
    except Unauthorized:
        await limits.check_auth_failures(address)
        await limits.count_auth_failure(address)
        raise
