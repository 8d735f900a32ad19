"""Rate limits over every backend: counted in this process, or in Redis across
instances (and per instance again while Redis is away)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from limits import parse

from scoreboard.errors import RateLimited
from scoreboard.ratelimit import RateLimits
from scoreboard.redislink import RedisLink
from tests.support import REDIS, redis_prefix


@contextlib.asynccontextmanager
async def limits_of(backend: str, count: int = 1) -> AsyncIterator[list[RateLimits]]:
    """``count`` instances' limits: one shared Redis, or (memory) each its own."""
    updates, failures = parse("3/minute"), parse("2/minute")
    if backend == "memory":
        yield [RateLimits(updates, failures) for _ in range(count)]
        return
    async with redis_prefix() as prefix:
        links = [RedisLink(REDIS, prefix) for _ in range(count)]
        for link in links:
            link.back()
        try:
            yield [RateLimits(updates, failures, redis=link) for link in links]
        finally:
            for link in links:
                await link.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_updates_are_limited_per_user_with_an_honest_retry_after(backend: str) -> None:
    async with limits_of(backend) as (limits,):
        for _ in range(3):
            await limits.hit_update("alice")
        with pytest.raises(RateLimited) as refused:
            await limits.hit_update("alice")
        assert 1 <= refused.value.retry_after <= 60
        await limits.hit_update("bob")  # per user
        await limits.hit_action("alice")  # actions have a limit of their own


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_failed_authentications_are_limited_per_address(backend: str) -> None:
    async with limits_of(backend) as (limits,):
        await limits.check_auth_failures("10.0.0.1")
        await limits.count_auth_failure("10.0.0.1")
        await limits.count_auth_failure("10.0.0.1")
        with pytest.raises(RateLimited):
            await limits.check_auth_failures("10.0.0.1")
        await limits.check_auth_failures("10.0.0.2")


async def test_redis_limits_count_across_instances_and_locally_while_redis_is_away() -> None:
    async with limits_of("redis", 2) as (a, b):
        await a.hit_update("alice")
        await b.hit_update("alice")
        await a.hit_update("alice")
        with pytest.raises(RateLimited):
            await b.hit_update("alice")  # the fourth, on either instance
        b._redis.lost("test: away")  # type: ignore[union-attr]
        for _ in range(3):
            await b.hit_update("alice")  # counted here alone meanwhile (API.md)
        with pytest.raises(RateLimited):
            await b.hit_update("alice")


async def test_hits_sent_together_count_exactly_across_instances() -> None:
    """Hits in the same turn of the loop go to Redis in one pipeline: 40 at once for one
    user on two instances, with 3 allowed a minute, let exactly 3 through; the other
    users' hits in the same pipelines are counted for them alone."""
    async with limits_of("redis", 2) as (a, b):
        async def attempt(limits: RateLimits, user: str) -> bool:
            try:
                await limits.hit_update(user)
            except RateLimited as refused:
                assert refused.retry_after >= 1
                return False
            return True

        tries = [attempt(a if i % 2 else b, "alice") for i in range(40)]
        others = [attempt(a, f"user-{i}") for i in range(20)]
        results = await asyncio.gather(*tries, *others)
        assert sum(results[:40]) == 3
        assert all(results[40:])
