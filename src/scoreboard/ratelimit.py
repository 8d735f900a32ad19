"""Rate limits, counted with the ``limits`` library (moving window).

Two limits: score updates per verified ``sub``, and failed authentications per
client address (so a guesser cannot try tokens as fast as it likes).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from scoreboard.errors import RateLimited


class RateLimits:
    def __init__(self, updates: RateLimitItem, auth_failures: RateLimitItem,
                 storage: Storage | None = None) -> None:
        self._limiter = MovingWindowRateLimiter(storage or MemoryStorage())
        self._updates = updates
        self._auth_failures = auth_failures

    async def hit_update(self, sub: str) -> None:
        """Count one update for ``sub``; raise ``RateLimited`` (not counted) when over."""
        if not await self._limiter.hit(self._updates, "update", sub):
            raise RateLimited(
                f"at most {self._updates} score updates per user",
                await self._retry_after(self._updates, "update", sub),
            )

    async def check_auth_failures(self, address: str) -> None:
        if not await self._limiter.test(self._auth_failures, "authfail", address):
            raise RateLimited(
                "too many failed authentications from this address",
                await self._retry_after(self._auth_failures, "authfail", address),
                "auth_failures",
            )

    async def count_auth_failure(self, address: str) -> None:
        await self._limiter.hit(self._auth_failures, "authfail", address)

    async def _retry_after(self, item: RateLimitItem, *keys: str) -> int:
        stats = await self._limiter.get_window_stats(item, *keys)
        return max(1, math.ceil(stats.reset_time - time.time()))
