"""Rate limits, counted with the ``limits`` library (moving window).

Two limits: score updates per verified ``sub``, and failed authentications per
client address (so a guesser cannot try tokens as fast as it likes). With Redis they
are counted there, across every instance; while Redis is away each instance counts on
its own (API.md). Security-event budgets are always per instance.

With Redis, the updates' hits that arrive in one turn of the event loop go to Redis in
one pipeline (``PipelinedHits``): the same script on the same keys as ``limits``' own
Redis storage, so every count and answer is the one ``limits`` would give, for a
round trip per batch of requests instead of one each.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter as SharedRateLimiter
from limits.errors import StorageError
from limits.storage import MovingWindowSupport, Storage
from limits.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis

from scoreboard.coalesce import Coalescer
from scoreboard.errors import RateLimited
from scoreboard.redislink import FAILURES, RedisLink

T = TypeVar("T")
_SWEEP_PER_HIT = 4
_EVENTS = parse("20/minute")


class CompactMemoryStorage(Storage, MovingWindowSupport):
    """In-process storage for ``limits`` whose cost does not grow with the number of keys.

    ``limits``' own MemoryStorage sweeps every key on a 10 ms timer (the asyncio one
    hops to a thread per key); with one key per user that sweep cost more than the
    rest of a write at a few thousand users (measured with bench/http_bench.py).
    Here a key's window is trimmed when it is touched, keys are kept in order of last
    use, and each hit drops up to four keys whose windows have fully expired. Each
    window holds at most ``limit`` timestamps. Serves a single process only.
    """

    STORAGE_SCHEME = ["scoreboard+memory"]

    def __init__(self, uri: str | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(uri)
        self.clock = clock
        self._windows: dict[str, deque[float]] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._expires: dict[str, float] = {}  # key -> when it may go; oldest use first

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def _touch(self, key: str, until: float, now: float) -> None:
        self._expires.pop(key, None)
        self._expires[key] = until
        for _ in range(_SWEEP_PER_HIT):
            oldest = next(iter(self._expires))
            if self._expires[oldest] > now:
                break
            self.clear(oldest)

    def _window(self, key: str, expiry: float, now: float) -> deque[float]:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = deque()
        cutoff = now - expiry
        while window and window[0] <= cutoff:
            window.popleft()
        return window

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        now = self.clock()
        window = self._window(key, expiry, now)
        self._touch(key, now + expiry, now)
        if len(window) + amount > limit:
            return False
        window.extend([now] * amount)
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = self.clock()
        window = self._window(key, expiry, now)
        return (window[0], len(window)) if window else (now, 0)

    # Fixed-window counters: part of the Storage contract, unused by the moving window.
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self.clock()
        count, until = self._counters.get(key, (0, 0.0))
        if until <= now:
            count, until = 0, now + expiry
        self._counters[key] = (count + amount, until)
        self._touch(key, until, now)
        return count + amount

    def get(self, key: str) -> int:
        count, until = self._counters.get(key, (0, 0.0))
        return count if until > self.clock() else 0

    def get_expiry(self, key: str) -> float:
        return self._counters.get(key, (0, self.clock()))[1]

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        dropped = len(self._expires)
        self._windows.clear()
        self._counters.clear()
        self._expires.clear()
        return dropped

    def clear(self, key: str) -> None:
        self._windows.pop(key, None)
        self._counters.pop(key, None)
        self._expires.pop(key, None)


class PipelinedHits:
    """Moving-window hits sent to Redis together: every hit asked for in one turn of the
    event loop (or while the previous pipeline was out) in one round trip. Measured:
    ~70 us of this process's CPU a hit one by one, ~22 us pipelined.

    It runs ``limits``' own acquire script (``acquire_moving_window.lua``) through its
    Redis storage's bridge, with the bridge's key prefix: internals of ``limits``, whose
    version is pinned (``docs/architecture.md``, "Other people's internals")."""

    def __init__(self, storage: RedisStorage, client: Redis,
                 clock: Callable[[], float]) -> None:
        self._bridge = cast(RedispyBridge, storage.bridge)
        self._client = client
        self._clock = clock
        self._send = Coalescer(self._send_many)

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        key = self._bridge.prefixed_key(item.key_for(*identifiers))
        return await self._send((key, item.amount, item.get_expiry()))

    async def _send_many(self, hits: list[tuple[str, int, int]]) -> list[bool]:
        script = self._bridge.lua_acquire_moving_window
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                now = self._clock()
                for key, limit, expiry in hits:
                    await script(keys=[key], args=[now, limit, expiry, 1],
                                 client=pipe)  # type: ignore[arg-type]  # async pipeline
                return [bool(acquired) for acquired in await pipe.execute()]
        except FAILURES as error:
            raise StorageError(error) from error


class RateLimits:
    def __init__(self, updates: RateLimitItem, auth_failures: RateLimitItem,
                 clock: Callable[[], float] = time.time, redis: RedisLink | None = None) -> None:
        self._clock = clock
        self._local = MovingWindowRateLimiter(CompactMemoryStorage(clock=clock))
        self._redis = redis
        self._shared: SharedRateLimiter | None = None
        self._pipelined: PipelinedHits | None = None
        if redis is not None:
            storage = RedisStorage(  # on the link's own connections, timeouts and all
                "async+" + redis.url, implementation="redispy", wrap_exceptions=True,
                key_prefix=redis.key("limits"),
                connection_pool=redis.client.connection_pool,  # type: ignore[arg-type]
            )
            self._shared = SharedRateLimiter(storage)
            self._pipelined = PipelinedHits(storage, redis.client, clock)
        self._updates = updates
        self._auth_failures = auth_failures

    async def hit_update(self, sub: str) -> None:
        """Count one update for ``sub``; raise ``RateLimited`` (not counted) when over."""
        if not await self._hit(self._updates, "update", sub):
            raise RateLimited(
                f"at most {self._updates} score updates per user",
                await self._retry_after(self._updates, "update", sub),
            )

    async def hit_action(self, sub: str) -> None:
        """``POST /actions`` has a limit of its own, of the same size."""
        if not await self._hit(self._updates, "action", sub):
            raise RateLimited(
                f"at most {self._updates} actions per user",
                await self._retry_after(self._updates, "action", sub),
            )

    def allow_event(self, sub: str) -> bool:
        """Whether to store one more security event for ``sub`` (20 a minute at most)."""
        return self._local.hit(_EVENTS, "event", sub)

    async def check_auth_failures(self, address: str) -> None:
        item = self._auth_failures
        allowed = await self._counted(lambda shared: shared.test(item, "authfail", address),
                                      lambda: self._local.test(item, "authfail", address))
        if not allowed:
            raise RateLimited(
                "too many failed authentications from this address",
                await self._retry_after(self._auth_failures, "authfail", address),
                "auth_failures",
            )

    async def count_auth_failure(self, address: str) -> None:
        await self._hit(self._auth_failures, "authfail", address)

    async def _hit(self, item: RateLimitItem, *keys: str) -> bool:
        pipelined = self._pipelined
        if pipelined is not None:
            return await self._counted(lambda _: pipelined.hit(item, *keys),
                                       lambda: self._local.hit(item, *keys))
        return await self._counted(lambda shared: shared.hit(item, *keys),
                                   lambda: self._local.hit(item, *keys))

    async def _retry_after(self, item: RateLimitItem, *keys: str) -> int:
        stats = await self._counted(lambda shared: shared.get_window_stats(item, *keys),
                                    lambda: self._local.get_window_stats(item, *keys))
        return max(1, math.ceil(stats.reset_time - self._clock()))

    async def _counted(self, shared: Callable[[SharedRateLimiter], Awaitable[T]],
                       local: Callable[[], T]) -> T:
        """Counted in Redis while it answers; here otherwise."""
        if self._shared is not None and self._redis is not None and self._redis.up:
            try:
                return await shared(self._shared)
            except StorageError as error:
                self._redis.lost(error.storage_error)
        return local()
