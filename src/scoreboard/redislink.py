"""One Redis connection pool for the ranking, the broker and the rate limits, and whether
Redis answers. Redis is a cache and a bus here, never the truth: when it fails the
service carries on (API.md, "Operations") and the failover ranking brings it back.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from scoreboard.errors import describe

log = structlog.get_logger("scoreboard.redis")

# A dead Redis must cost a write milliseconds, not seconds: short timeouts, one retry
# (a pooled connection that Redis closed is re-dialled once), no backoff.
TIMEOUT_SECONDS = 0.5
FAILURES = (RedisError, OSError)


class RedisLink:
    def __init__(self, url: str, prefix: str,
                 on_state: Callable[[bool], None] = lambda up: None) -> None:
        self.url = url
        self.prefix = prefix
        self.client: Redis = Redis.from_url(
            url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 1), health_check_interval=5,
            client_name=f"scoreboard-{prefix}",  # so CLIENT LIST tells whose it is
        )
        # Subscriptions get a client of their own that never reconnects by itself: the
        # broker must see each break, to re-subscribe and push a fresh snapshot.
        self.subscriber: Redis = Redis.from_url(
            url, socket_connect_timeout=TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0),
            client_name=f"scoreboard-subscriber-{prefix}",
        )
        self.up = False  # until the ranking has been rebuilt into it
        self._on_state = on_state

    def key(self, name: str) -> str:
        return self.prefix + name

    def lost(self, reason: BaseException | str) -> None:
        """A Redis call failed (or lost its data): go degraded until the failover ranking
        has it back."""
        if self.up:
            detail = reason if isinstance(reason, str) else describe(reason)
            log.warning("redis_down", detail=detail)
            self.up = False
            self._on_state(False)

    def back(self) -> None:
        if not self.up:
            log.info("redis_up")
            self.up = True
            self._on_state(True)

    async def close(self) -> None:
        await self.client.aclose()
        await self.subscriber.aclose()
