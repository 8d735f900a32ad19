"""The hub's sweeps and heartbeats, with subscribers whose socket is a recorder.

The real-server tests (tests/live) show the same behaviour end to end; these pin down
what a sweep writes to which subscriber, which needs more subscribers than a slice.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message

from scoreboard.broker.base import Snapshot
from scoreboard.live import SSE_PING_CHUNK, SWEEP_SLICE, Frames, Hub, Subscriber, chunk

PING: Message = {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}


class Socket:
    """What DirectBody offers the hub: whole chunks written, or refused."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, framed_chunk: bytes) -> bool:
        self.chunks.append(framed_chunk)
        return True


def message(frames: Frames) -> Message:
    return {"type": "http.response.body", "body": frames.sse, "more_body": True}


async def subscribe(hub: Hub, count: int) -> tuple[list[Subscriber], list[Socket]]:
    """``count`` subscribers, each with its snapshot sent through its own task."""
    subscribers, sockets = [], []

    async def send(msg: Message) -> None:  # the snapshot: the pushes go to ``socket``
        pass

    for _ in range(count):
        socket = Socket()
        subscriber = hub.join("b", "127.0.0.1", send, message, PING, socket)
        subscriber.task = asyncio.create_task(subscriber.run())
        subscribers.append(subscriber)
        sockets.append(socket)
    await asyncio.sleep(0)  # every task sends its snapshot and becomes ready
    assert all(s.ready for s in subscribers)
    return subscribers, sockets


def versions(socket: Socket) -> list[int]:
    return [int(c.split(b"\nid: ")[1].split(b"\n")[0]) for c in socket.chunks if b"\nid: " in c]


async def test_a_sweep_writes_what_arrived_while_it_ran() -> None:
    hub = Hub(push_interval=0.05, max_subscribers=10_000, max_per_address=10_000,
              stall_timeout=5.0)
    subscribers, sockets = await subscribe(hub, 3 * SWEEP_SLICE)
    hub.offer(Snapshot("b", 1, b"[1]"))  # a quiet spell: the sweep starts now, one slice
    first_slice = [s for s in sockets if versions(s) == [1]]
    rest = [s for s in sockets if versions(s) == []]
    assert (len(first_slice), len(rest)) == (SWEEP_SLICE, 2 * SWEEP_SLICE)
    hub.offer(Snapshot("b", 2, b"[2]"))  # before the sweep's next slice
    await asyncio.sleep(0.01)  # the rest of the sweep; the next is not due yet
    assert all(versions(s) == [1] for s in first_slice)
    assert all(versions(s) == [2] for s in rest)  # never 1: it skipped to the newest
    await asyncio.sleep(0.08)  # the next sweep, due 50 ms after the first began
    assert all(versions(s) == [1, 2] for s in first_slice)
    assert all(versions(s) == [2] for s in rest)  # nothing twice
    for subscriber in subscribers:
        subscriber.close("test")
    await asyncio.gather(*(s.task for s in subscribers if s.task))


async def test_pings_ride_along_with_pushes_and_go_alone_when_quiet() -> None:
    hub = Hub(push_interval=0.0, max_subscribers=10, max_per_address=10, stall_timeout=5.0,
              heartbeat=3600)  # beats by hand below
    subscribers, sockets = await subscribe(hub, 2)
    [first, second] = subscribers
    first.beat(), second.beat()  # a ping is owed: nothing written yet
    assert sockets[0].chunks == sockets[1].chunks == []
    hub.offer(Snapshot("b", 1, b"[1]"))
    event = chunk(b"event: scores\nid: 1\ndata: [1]\n\n")
    assert sockets[0].chunks == [SSE_PING_CHUNK + event]  # one write: the ping and the event
    first.beat(), second.beat()  # owed again; the board stays quiet
    first.beat(), second.beat()  # still owed at the next beat: alone, now
    assert sockets[0].chunks == [SSE_PING_CHUNK + event, SSE_PING_CHUNK]
    assert sockets[1].chunks == sockets[0].chunks
    for subscriber in subscribers:
        subscriber.close("test")
    await asyncio.gather(*(s.task for s in subscribers if s.task))


async def test_a_push_that_waits_for_the_socket_is_written_once() -> None:
    hub = Hub(push_interval=0.0, max_subscribers=10, max_per_address=10, stall_timeout=5.0)
    socket_full = asyncio.get_running_loop().create_future()
    sent: list[Message] = []

    async def send(msg: Message) -> None:
        sent.append(msg)
        if len(sent) == 2:  # the first push finds the socket full
            await socket_full

    subscriber = hub.join("b", "127.0.0.1", send, message, None)  # no direct writes: all sends
    subscriber.task = asyncio.create_task(subscriber.run())
    await asyncio.sleep(0)
    hub.offer(Snapshot("b", 1, b"[1]"))
    assert len(sent) == 2  # the snapshot, then the push, waiting
    socket_full.set_result(None)  # the socket drains: the connection's task finishes it
    await asyncio.sleep(0.01)
    hub.offer(Snapshot("b", 2, b"[2]"))
    await asyncio.sleep(0.01)
    ids = [m["body"].split(b"\nid: ")[1].split(b"\n")[0] for m in sent]
    assert ids == [b"0", b"1", b"2"]  # ids only grow: nothing written twice
    subscriber.close("test")
    await subscriber.task
