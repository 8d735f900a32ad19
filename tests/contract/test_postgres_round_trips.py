"""A group commit is a constant number of round trips to PostgreSQL, whatever the batch
holds: measured through a proxy that delays everything sent to the server, where each
round trip costs at least the delay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

from scoreboard.store.postgres import PostgresStore
from tests.contract.test_store import write
from tests.support import postgres_schema

DELAY = 0.1  # seconds added to every chunk sent to the server (a round trip's least)


@asynccontextmanager
async def delayed(url: str) -> AsyncIterator[str]:
    """``url`` through a local proxy that forwards what the client sends ``DELAY`` after
    it arrived (chunks keep their order; pipelined statements are not held up one by
    one) and what the server answers at once."""
    target = urlsplit(url)
    loop = asyncio.get_running_loop()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   delay: float) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def forward() -> None:
            while (item := await queue.get()) is not None:
                await asyncio.sleep(max(0.0, item[0] - loop.time()))
                writer.write(item[1])
                await writer.drain()
            writer.close()

        sending = asyncio.create_task(forward())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + delay, data))
        except ConnectionError:
            pass
        queue.put_nowait(None)
        await sending

    serving: set[asyncio.Task[None]] = set()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        serving.add(asyncio.current_task())  # type: ignore[arg-type]
        server_r, server_w = await asyncio.open_connection(target.hostname, target.port or 5432)
        await asyncio.gather(pump(client_r, server_w, DELAY), pump(server_r, client_w, 0.0),
                             return_exceptions=True)

    proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    netloc = f"{target.username or 'postgres'}@127.0.0.1:{port}"
    try:
        yield urlunsplit((target.scheme, netloc, target.path, target.query, ""))
    finally:
        proxy.close()
        if serving:  # the store closed its connections: each pair of pumps ends
            await asyncio.wait(serving, timeout=5)


async def test_a_batch_costs_the_same_round_trips_for_one_update_or_two_hundred() -> None:
    async with postgres_schema() as url, delayed(url) as slow_url:
        store = PostgresStore(slow_url, pool_size=1)
        await store.open()
        try:
            await write(store, ("default", "warm", 1), key="k-warm")  # connection set up
            took = {}
            for size in (1, 200):
                started = time.perf_counter()
                await write(store, *[("default", f"u{size}-{i}", 1) for i in range(size)],
                            key=f"k{size}")
                took[size] = time.perf_counter() - started
        finally:
            await store.close()
    # BEGIN with the pipelined reads (one wait), the writes with COMMIT (one more): two
    # round trips (psycopg's own transaction() took five; one per update would be 200).
    assert took[1] < 3 * DELAY, took
    assert took[200] < 3 * DELAY, took
