"""The moving-window storage behind the rate limits, with an injected clock."""

from __future__ import annotations

import pytest
from limits import parse
from limits.strategies import MovingWindowRateLimiter

from scoreboard.errors import RateLimited
from scoreboard.ratelimit import CompactMemoryStorage, RateLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_moving_window() -> None:
    clock = Clock()
    limiter = MovingWindowRateLimiter(CompactMemoryStorage(clock=clock))
    item = parse("3/minute")
    for _ in range(3):
        assert limiter.hit(item, "a")
        clock.now += 10
    assert not limiter.hit(item, "a")  # 3 in the last 60 s
    assert limiter.hit(item, "b")  # per key
    stats = limiter.get_window_stats(item, "a")
    assert stats.remaining == 0 and stats.reset_time == 1_000_060.0
    clock.now = 1_000_060.5  # the first hit has left the window; the others have not
    assert limiter.hit(item, "a")
    assert not limiter.hit(item, "a")
    assert not limiter.test(item, "a")


def test_idle_keys_are_swept_as_others_are_hit() -> None:
    clock = Clock()
    storage = CompactMemoryStorage(clock=clock)
    limiter = MovingWindowRateLimiter(storage)
    item = parse("5/second")
    for i in range(1000):
        limiter.hit(item, f"user{i}")
    assert len(storage._windows) == 1000
    clock.now += 2
    for _ in range(300):
        limiter.hit(item, "active")
        clock.now += 0.25
    assert len(storage._windows) <= 2  # nothing grows without bound
    assert len(storage._expires) == len(storage._windows) <= 2


async def test_retry_after_is_when_a_slot_frees() -> None:
    clock = Clock()
    limits = RateLimits(parse("2/minute"), parse("1/minute"), clock=clock)
    await limits.hit_update("a")
    clock.now += 20
    await limits.hit_update("a")
    with pytest.raises(RateLimited) as refused:
        await limits.hit_update("a")
    assert refused.value.retry_after == 40
    clock.now += 40
    await limits.hit_update("a")
