"""A small SSE reader for tests: events as they arrive on a real HTTP connection.

A background task reads the stream into a queue, so a test can wait for the next
event with a timeout without tearing down the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    event: str
    id: int  # 0 for an event without one (a season's)
    data: Any


class SSE:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.comments: list[str] = []
        self.comment_times: list[float] = []  # time.monotonic() each comment was read
        self.retry: int | None = None
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if "data" in fields:
                        self._events.put_nowait(Event(fields.get("event", "message"),
                                                      int(fields.get("id", 0)),
                                                      json.loads(fields["data"])))
                    fields = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                    self.comment_times.append(time.monotonic())
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "retry":
                        self.retry = int(value)
                    else:
                        fields[name] = value
        except httpx.HTTPError:
            pass
        finally:
            self._events.put_nowait(None)

    async def next(self, timeout: float = 2.0) -> Event:
        event = await asyncio.wait_for(self._events.get(), timeout)
        if event is None:
            self._events.put_nowait(None)
            raise EOFError("the stream ended")
        return event

    async def until(self, predicate: Callable[[Event], bool], timeout: float = 2.0) -> Event:
        async def find() -> Event:
            while True:
                event = await self.next(timeout)
                if predicate(event):
                    return event
        return await asyncio.wait_for(find(), timeout)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def stream(client: httpx.AsyncClient, headers: dict[str, str] | None = None,
                 path: str = "/scores/stream") -> AsyncIterator[SSE]:
    async with client.stream("GET", path, headers=headers or {}) as response:
        sse = SSE(response)
        try:
            yield sse
        finally:
            await sse.close()
