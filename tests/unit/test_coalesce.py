"""The coalescer: the asks of one turn of the loop answered by one call, in order; the
asks made while a call is out by the next one; a failure reaches each of its asks."""

from __future__ import annotations

import asyncio

import pytest

from scoreboard.coalesce import Coalescer


async def test_asks_of_one_turn_share_a_call_and_later_ones_the_next() -> None:
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def many(asks: list[int]) -> list[int]:
        calls.append(asks)
        await gate.wait()
        return [ask * 10 for ask in asks]

    ask = Coalescer(many)
    first = [asyncio.create_task(ask(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(ask(i)) for i in (7, 8)]  # while the first call is out
    await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(*first, *later) == [0, 10, 20, 30, 40, 70, 80]
    assert calls == [[0, 1, 2, 3, 4], [7, 8]]
    assert await ask(9) == 90 and calls[-1] == [9]


async def test_a_failure_reaches_every_ask_of_its_call_only() -> None:
    async def many(asks: list[int]) -> list[int]:
        if 3 in asks:
            raise ConnectionError("away")
        return asks

    ask = Coalescer(many)
    results = await asyncio.gather(*(ask(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await ask(1) == 1
    with pytest.raises(ConnectionError):
        await ask(3)
