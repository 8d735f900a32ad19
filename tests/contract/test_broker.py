"""The Broker contract over every backend (memory, Redis): snapshots reach every hub.
The Redis cases run on the test Redis and fail without it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from scoreboard.broker.base import Broker, Message, Moves, Notice, Snapshot
from scoreboard.broker.memory import MemoryBroker
from scoreboard.broker.redis import RedisBroker
from scoreboard.redislink import RedisLink
from tests.support import REDIS, redis_prefix


@contextlib.asynccontextmanager
async def instances(backend: str, count: int) -> AsyncIterator[list[Broker]]:
    """``count`` brokers as ``count`` instances would have them (memory: one process)."""
    if backend == "memory":
        broker = MemoryBroker()
        await broker.start()
        yield [broker]
        await broker.stop()
        return
    async with redis_prefix() as prefix:
        links = [RedisLink(REDIS, prefix) for _ in range(count)]
        for link in links:
            link.back()  # as the failover ranking does once the board is built
        brokers = [RedisBroker(link) for link in links]
        for broker in brokers:
            await broker.start()
        try:
            await asyncio.sleep(0.2)  # subscribed
            yield list(brokers)
        finally:
            for broker in brokers:
                await broker.stop()
            for link in links:
                await link.close()


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not delivered in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_snapshot_reaches_every_receiver_of_every_instance(backend: str) -> None:
    async with instances(backend, 2) as brokers:
        received: list[list[Snapshot]] = [[] for _ in brokers]
        for broker, inbox in zip(brokers, received, strict=True):
            broker.subscribe(inbox.append)
        snapshot = Snapshot("b", 1_795_000_000_000_000, b'[{"rank":1}]', season=12,
                            season_started_ms=1_796_000_000_000)
        await brokers[0].publish(snapshot)
        assert received[0][0] == snapshot  # its own receivers: at once, not via Redis
        await until(lambda: all(snapshot in inbox for inbox in received))


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_moves_reach_every_instance_once(backend: str) -> None:
    """A commit's moves (places up to 2^53 - 1 either way, None off the board), or
    "anything moved": each instance's receivers get them once, the publisher's at once."""
    async with instances(backend, 2) as brokers:
        received: list[list[Message]] = [[] for _ in brokers]
        for broker, inbox in zip(brokers, received, strict=True):
            broker.subscribe(inbox.append)
        sent = [Moves("b", 3, (("alice", None, -(2**53 - 1)), ("bob", 2**53 - 1, 0))),
                Moves("weekly", 1, None)]
        for message in sent:
            await brokers[0].publish(message)
        await until(lambda: all(len(inbox) == len(sent) for inbox in received))
        await asyncio.sleep(0.2)  # and no second copy of its own comes back
        for inbox in received:
            assert [(m.board, m.season, m.moves) for m in inbox  # type: ignore[union-attr]
                    ] == [(m.board, m.season, m.moves) for m in sent]


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_boards_and_notices_travel_apart(backend: str) -> None:
    """Snapshots name their board (ids of any allowed length) and its season; a notice
    reaches every instance too."""
    async with instances(backend, 2) as brokers:
        received: list[list[Message]] = [[] for _ in brokers]
        for broker, inbox in zip(brokers, received, strict=True):
            broker.subscribe(inbox.append)
        long_id = "b" * 64
        sent = [Snapshot(long_id, 7, b"[]"), Snapshot("weekly", 3, b'[{"rank":1}]', 2**40, 5),
                Notice("boards", "weekly")]
        for message in sent:
            await brokers[-1].publish(message)
        await until(lambda: all(all(m in inbox for m in sent) for inbox in received))


async def test_redis_degraded_instance_publishes_locally_and_ignores_others() -> None:
    async with instances("redis", 2) as brokers:
        a, b = brokers
        assert isinstance(a, RedisBroker) and isinstance(b, RedisBroker)
        on_a: list[Snapshot] = []
        on_b: list[Snapshot] = []
        a.subscribe(on_a.append)
        b.subscribe(on_b.append)
        b._link.lost("test: degraded")
        await b.publish(Snapshot("b", 5, b"[]"))  # local only: Redis is not used while down
        await a.publish(Snapshot("b", 6, b"[1]"))
        await until(lambda: Snapshot("b", 6, b"[1]") in on_a)
        await asyncio.sleep(0.2)
        assert on_b == [Snapshot("b", 5, b"[]")]  # not A's: B shows the store meanwhile
        assert Snapshot("b", 5, b"[]") not in on_a


async def test_redis_broker_resubscribes_and_calls_back_after_a_break() -> None:
    async with redis_prefix() as prefix:
        link = RedisLink(REDIS, prefix)
        link.back()
        broker = RedisBroker(link)
        reconnected = asyncio.Event()

        async def fresh_snapshot() -> None:
            reconnected.set()

        broker.on_reconnect(fresh_snapshot)
        received: list[Snapshot] = []
        broker.subscribe(received.append)
        await broker.start()
        try:
            await asyncio.sleep(0.2)
            # Cut the subscriber's connection from the server side, as a Redis restart does.
            for client in await link.client.client_list(_type="pubsub"):
                if client["name"] == f"scoreboard-subscriber-{prefix}":
                    await link.client.client_kill_filter(_id=client["id"])
            await asyncio.wait_for(reconnected.wait(), 3)
            other = RedisLink(REDIS, prefix)
            other.back()
            await RedisBroker(other).publish(Snapshot("b", 9, b"[]"))
            await other.close()
            await until(lambda: Snapshot("b", 9, b"[]") in received)
        finally:
            await broker.stop()
            await link.close()
