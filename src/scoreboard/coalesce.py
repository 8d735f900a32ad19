"""Many small asks of a server, sent as one: a round trip per turn of the loop, not per
request.

Every call made in one turn of the event loop (and every call made while the previous
batch is out) is answered by one call of ``many`` with all of them, in order. Under
load a group of concurrent requests costs one round trip to PostgreSQL or Redis, as
the group commit does for the writes themselves; alone, a call waits one turn of the
loop more than it would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    def __init__(self, many: Callable[[list[K]], Awaitable[Sequence[V]]]) -> None:
        self._many = many
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, ask: K) -> V:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[V] = loop.create_future()
        self._pending.append((ask, answer))
        if self._sender is None:
            self._sender = loop.create_task(self._send())
        return await answer

    async def _send(self) -> None:
        batch: list[tuple[K, asyncio.Future[V]]] = []
        try:
            await asyncio.sleep(0)  # the rest of this turn's asks join
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    answers = await self._many([ask for ask, _ in batch])
                except Exception as error:  # each caller gets it, as its own call would
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(error)
                    continue
                for (_, answer), value in zip(batch, answers, strict=True):
                    if not answer.done():
                        answer.set_result(value)
        finally:
            self._sender = None
            for _, answer in batch + self._pending:  # cancelled (the process stops)
                if not answer.done():
                    answer.cancel()
            self._pending = []
