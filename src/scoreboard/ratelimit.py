"""Rate limits, counted with the ``limits`` library (moving window).

Two limits: score updates per verified ``sub``, and failed authentications per
client address (so a guesser cannot try tokens as fast as it likes).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from limits import RateLimitItem, parse
from limits.storage import MovingWindowSupport, Storage
from limits.strategies import MovingWindowRateLimiter

from scoreboard.errors import RateLimited

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


class RateLimits:
    def __init__(self, updates: RateLimitItem, auth_failures: RateLimitItem,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._limiter = MovingWindowRateLimiter(CompactMemoryStorage(clock=clock))
        self._updates = updates
        self._auth_failures = auth_failures

    async def hit_update(self, sub: str) -> None:
        """Count one update for ``sub``; raise ``RateLimited`` (not counted) when over."""
        if not self._limiter.hit(self._updates, "update", sub):
            raise RateLimited(
                f"at most {self._updates} score updates per user",
                self._retry_after(self._updates, "update", sub),
            )

    async def hit_action(self, sub: str) -> None:
        """``POST /actions`` has a limit of its own, of the same size."""
        if not self._limiter.hit(self._updates, "action", sub):
            raise RateLimited(
                f"at most {self._updates} actions per user",
                self._retry_after(self._updates, "action", sub),
            )

    def allow_event(self, sub: str) -> bool:
        """Whether to store one more security event for ``sub`` (20 a minute at most)."""
        return self._limiter.hit(_EVENTS, "event", sub)

    async def check_auth_failures(self, address: str) -> None:
        if not self._limiter.test(self._auth_failures, "authfail", address):
            raise RateLimited(
                "too many failed authentications from this address",
                self._retry_after(self._auth_failures, "authfail", address),
                "auth_failures",
            )

    async def count_auth_failure(self, address: str) -> None:
        self._limiter.hit(self._auth_failures, "authfail", address)

    def _retry_after(self, item: RateLimitItem, *keys: str) -> int:
        stats = self._limiter.get_window_stats(item, *keys)
        return max(1, math.ceil(stats.reset_time - self._clock()))
