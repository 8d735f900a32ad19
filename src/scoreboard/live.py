"""The hub: this process's live connections, their mailboxes, and coalesced pushes.

A snapshot is serialised once per push (an SSE frame and a WebSocket text) and the
same objects go to every subscriber. Each subscriber has a one-slot mailbox: a slow
one skips to the newest snapshot instead of growing a queue, and one whose writes
have been stuck for ``stall_timeout`` is dropped with reason ``slow``. Pushes are
coalesced to one per ``push_interval``; the first change after a quiet spell goes out
at once. A push walks the subscribers a slice at a time, always writing the newest
state (see ``Hub``). Versions only grow: an older snapshot than the one held is ignored.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import orjson
import structlog
from starlette.types import Message, Send

from scoreboard.broker.base import Snapshot
from scoreboard.errors import ScoreboardError
from scoreboard.model import rfc3339
from scoreboard.transport.steps import take_over

HEARTBEAT_SECONDS = 10.0  # API.md: a comment at least every 15 s
SSE_RETRY = b"retry: 2000\n\n"
SSE_PING = b": ping\n\n"
# Subscribers written per turn of the event loop during a sweep: under 1 ms of socket
# writes, after which the loop reads requests and finishes commits before going on.
SWEEP_SLICE = 64

log = structlog.get_logger("scoreboard.live")


class TooManyStreams(ScoreboardError):
    status = 429
    title = "Too Many Requests"
    retry_after = 5  # a slot frees when one of the address's connections ends: unknown


class StreamsFull(ScoreboardError):
    status = 503
    title = "Service Unavailable"
    retry_after = 5


class ChunkWriter(Protocol):
    """Writes a pre-framed chunk of an SSE body to the socket now; False when it can't."""

    def write(self, framed_chunk: bytes) -> bool: ...


def chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_PING_CHUNK = chunk(SSE_PING)


@dataclass(frozen=True, slots=True)
class Frames:
    """One snapshot, serialised once for every kind of subscriber; with the event that
    announces its season, for subscribers who last got one of an earlier season."""

    version: int
    scores: bytes
    sse: bytes
    sse_chunk: bytes  # the SSE event framed as one chunk, for ``DirectBody``
    sse_ping_chunk: bytes  # a ping comment, then the event: two chunks, one write
    ws: str
    season: int  # 0: not known yet (no snapshot of the board has arrived)
    season_sse: bytes
    season_ws: str

    @classmethod
    def of(cls, snapshot: Snapshot) -> Frames:
        sse = b"event: scores\nid: %d\ndata: %s\n\n" % (snapshot.version, snapshot.scores)
        ws = b'{"type":"scores","board":"%s","version":%d,"scores":%s}' % (
            snapshot.board.encode(), snapshot.version, snapshot.scores)
        season = orjson.dumps({"board": snapshot.board, "season": snapshot.season,
                               "started_at": rfc3339(snapshot.season_started_ms)})
        framed = chunk(sse)
        return cls(snapshot.version, snapshot.scores, sse, framed, SSE_PING_CHUNK + framed,
                   ws.decode(), snapshot.season, b"event: season\ndata: %s\n\n" % season,
                   '{"type":"season",' + season[1:].decode())

    @classmethod
    def placeholder(cls, board: str) -> Frames:
        """An empty board's, until its first snapshot comes (its season not known)."""
        return cls.of(Snapshot(board, 0, b"[]", season=0))


class Subscriber:
    """One live connection and its one-slot mailbox.

    A push is written from the hub's own loop when the connection is idle: straight to
    the socket when the connection offers that (``direct``: the pre-framed bytes, no
    coroutine at all), else by stepping the send coroutine once, which on a writable
    socket finishes right there — no task wake-up per client per push (measured: most
    of a push's cost at 10,000 clients). A write that has to wait for the socket is
    handed to the connection's own task (``run``), which finishes it and then writes
    whatever is newest.

    Heartbeats: a ping comment is owed (``ping_due``) from one beat to the next; the
    next push carries it in the same write, and one still owed at the next beat goes
    out alone (``beat``). A busy board costs no socket write for pings at all.

    Seasons: the first push of a new season is the connection's task's to write, after
    the event that announces the season (``season_message``).
    """

    __slots__ = ("_blocked", "_busy", "_direct", "_message", "_ping", "_season_message",
                 "_send", "_waiter", "_woken", "address", "board", "closed", "frames",
                 "ping_due", "ready", "reason", "season", "sent_version", "stuck_since",
                 "task")

    def __init__(self, address: str, frames: Frames, send: Send,
                 message: Callable[[Frames], Message], ping: Message | None,
                 direct: ChunkWriter | None = None,
                 season_message: Callable[[Frames], Message] | None = None) -> None:
        self.address = address
        self.board = ""
        self.frames = frames
        self.season = frames.season
        self._direct = direct
        self._send = send
        self._message = message
        self._season_message = season_message
        self._ping = ping
        self.sent_version = -1
        self.ping_due = False
        self.closed = False
        self.ready = False  # until ``run`` has sent the snapshot, the hub only leaves mail
        self.reason = ""
        self.stuck_since: float | None = None  # a write has been waiting since then
        self.task = asyncio.current_task()
        self._busy = False
        # A write the hub began that waits for the socket: the send, what it waits for,
        # and the version it carries (None: a ping).
        self._blocked: tuple[Coroutine[Any, Any, None], Any, int | None] | None = None
        # The connection's task sleeps until woken: a future only while it waits, not
        # an asyncio.Event (whose deque alone is 624 bytes, per connection).
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None

    def deliver(self, frames: Frames) -> None:
        # Runs once per subscriber per push: the checks are inlined (``_idle``).
        if frames.version <= self.sent_version:
            return  # it has this one already (it joined since, or a sweep passed twice)
        if frames.season != self.season:
            if self.season:  # a new season: its event first, from ``run``
                self.frames = frames
                self._wake()
                return
            self.season = frames.season  # the board's first snapshot: nothing to announce
        if self.ready and not self._busy and self._blocked is None and not self.closed:
            direct = self._direct
            if direct is not None:
                if self.ping_due:
                    if direct.write(frames.sse_ping_chunk):
                        self.sent_version, self.ping_due = frames.version, False
                        return
                elif direct.write(frames.sse_chunk):
                    self.sent_version = frames.version
                    return
            self.frames = frames
            if self._write_now(self._message(frames), frames.version):
                self.sent_version = frames.version
        else:
            self.frames = frames  # newest wins: an unsent older one is simply replaced
            self._wake()

    def beat(self) -> None:
        """A heartbeat (every half ``heartbeat``): a ping still owed since the last one
        goes out alone now; otherwise one is owed, for the next push to carry."""
        if self._ping is None:
            return
        if not self.ping_due:
            self.ping_due = True
        elif not self._idle():
            self._wake()  # the connection's task writes it after what it is writing
        elif ((self._direct is not None and self._direct.write(SSE_PING_CHUNK))
              or self._write_now(self._ping, None)):
            self.ping_due = False

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed, self.reason = True, reason
            self._wake()

    def _wake(self) -> None:
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep(self) -> None:
        if not self._woken:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._woken = False

    def _idle(self) -> bool:
        return self.ready and not self._busy and self._blocked is None and not self.closed

    def _write_now(self, message: Message, version: int | None) -> bool:
        """Step the send once; True when it finished, else the connection's task finishes
        it. ``version``: the snapshot the message carries (None: a ping)."""
        # The server's send (wrapped by the edge) is a coroutine function.
        step = cast(Coroutine[Any, Any, None], self._send(message))
        try:
            waiting = take_over(step.send(None))
        except StopIteration:
            return True
        except Exception:
            self.close("gone")
            return False
        self._blocked = (step, waiting, version)
        self.stuck_since = time.monotonic()
        self._wake()
        return False

    async def run(self) -> None:
        """The connection's own task: the snapshot, then whatever the hub could not write."""
        try:
            frames = self.frames
            await self._write(self._message(frames))
            self.sent_version, self.season = frames.version, frames.season
            self.ready = True
            while not self.closed:
                await self._sleep()
                if self._blocked is not None:
                    await self._finish_blocked()
                frames = self.frames
                if self.closed:
                    return
                if frames.version > self.sent_version:
                    if frames.season != self.season:
                        if self.season and self._season_message is not None:
                            await self._write(self._season_message(frames))
                        self.season = frames.season
                    await self._write(self._message(frames))
                    self.sent_version = frames.version
                if self.ping_due and self._ping is not None:
                    await self._write(self._ping)
                    self.ping_due = False
        finally:
            if self._blocked is not None:
                self._blocked[0].close()
                self._blocked = None

    async def _write(self, message: Message) -> None:
        self._busy = True
        self.stuck_since = time.monotonic()
        try:
            await self._send(message)
        finally:
            self._busy = False
            self.stuck_since = None

    async def _finish_blocked(self) -> None:
        assert self._blocked is not None
        step, waiting, version = self._blocked
        finished = False
        try:
            while True:
                # The send yielded what it waits for: the socket's "writable" future.
                if waiting is None:
                    await asyncio.sleep(0)
                else:
                    await waiting
                try:
                    waiting = take_over(step.send(None))
                except StopIteration:
                    finished = True
                    if version is None:
                        self.ping_due = False
                    else:  # written: the mailbox may hold this very one
                        self.sent_version = max(self.sent_version, version)
                    return
        finally:
            self._blocked = None
            self.stuck_since = None
            if not finished:
                step.close()


class _Feed:
    """One board's subscribers, its newest state, and the sweeps that bring it to them.

    A push is a *sweep*: a walk over every subscriber, ``SWEEP_SLICE`` of them per turn
    of the event loop, so the commits and requests that arrive meanwhile are not held
    behind it (one socket write costs 8.5-10.5 µs on this project's machine: a sweep of
    10,000 clients is about 100 ms). Each slice writes the newest state, also one that
    arrived after the sweep began: the clients late in a walk get what committed while
    it ran, not what was new when it started. Sweeps start at most once per
    ``push_interval``, the first one after a quiet spell at once; a change that arrived
    during a sweep gets the next one, for the clients the walk had already passed (the
    others are skipped, as every subscriber only takes versions newer than the one it
    has).
    """

    def __init__(self, hub: Hub, board: str) -> None:
        self.hub = hub
        self.subscribers: set[Subscriber] = set()
        self.newest = Frames.placeholder(board)
        self._unswept_since: float | None = None  # oldest change not yet in a sweep
        self._last_push = float("-inf")
        self._sweeping = False
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, snapshot: Snapshot) -> None:
        newest = self.newest
        if snapshot.season < newest.season:
            return  # a closed season's, applied late somewhere
        same_season = snapshot.season == newest.season
        if same_season and snapshot.version <= newest.version:
            return  # older
        if snapshot.scores == newest.scores and (same_season or not newest.season):
            if not same_season:  # the board's first snapshot: its season is known now
                self.newest = Frames.of(snapshot)
            return  # the top 10 clients already have (a change below it)
        self.newest = Frames.of(snapshot)
        if self._unswept_since is None:
            self._unswept_since = time.monotonic()
        self._schedule()

    def _schedule(self) -> None:
        if self._sweeping or self._timer is not None or self._unswept_since is None:
            return  # a running sweep schedules the next when it ends
        wait = self._last_push + self.hub.interval - time.monotonic()
        if wait <= 0:
            self._start_sweep()
        else:
            self._timer = asyncio.get_running_loop().call_later(wait, self._start_sweep)

    def _start_sweep(self) -> None:
        self._timer = None
        if self._unswept_since is None:
            return
        now = time.monotonic()
        self.hub.on_push(now - self._unswept_since)
        self._last_push, self._unswept_since = now, None
        self._sweeping = True
        self.hub.walk(self._sweep(list(self.subscribers)))

    def _sweep(self, subscribers: list[Subscriber]) -> Iterator[None]:
        try:
            for live in self.hub.slices(subscribers):
                frames = self.newest  # newer than at the start, if one came meanwhile
                for subscriber in live:
                    subscriber.deliver(frames)
                yield
        finally:
            self._sweeping = False
        if not self.hub.closing:
            self._schedule()  # a change that came during the sweep: the next one

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Hub:
    """This process's subscribers, per board, and the sweeps that bring them the newest
    state (``_Feed``). Caps count connections: a WebSocket subscribed to several boards
    is one connection."""

    def __init__(
        self,
        push_interval: float,
        max_subscribers: int,
        max_per_address: int,
        stall_timeout: float,
        heartbeat: float = HEARTBEAT_SECONDS,
        on_push: Callable[[float], None] = lambda seconds: None,
        on_drop: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.interval = push_interval
        self._max = max_subscribers
        self._max_per_address = max_per_address
        self._stall = stall_timeout
        self._heartbeat_every = heartbeat
        self.on_push = on_push
        self._on_drop = on_drop
        self._feeds: dict[str, _Feed] = {}
        self._gone: set[str] = set()  # deleted boards: a late snapshot of one is dropped
        self._connections = 0
        self._per_address: Counter[str] = Counter()
        self._heartbeat: asyncio.Task[None] | None = None
        self.closing = False

    def current(self, board: str) -> Frames:
        """A board's newest state: what a new subscriber gets and what sweeps write."""
        return self._feed(board).newest

    def __len__(self) -> int:
        """Live connections (SSE and WebSocket)."""
        return self._connections

    def _feed(self, board: str) -> _Feed:
        feed = self._feeds.get(board)
        if feed is None:
            feed = self._feeds[board] = _Feed(self, board)
        return feed

    def start(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat(), name="live-heartbeat")

    def close_all(self, reason: str = "shutdown") -> None:
        """Ask every subscriber to end its stream (the server is stopping)."""
        self.closing = True
        for feed in self._feeds.values():
            for subscriber in list(feed.subscribers):
                subscriber.close(reason)

    async def stop(self) -> None:
        self.close_all()
        for feed in self._feeds.values():
            feed.stop()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)

    # -- connections and subscribers ---------------------------------------------

    def connect(self, address: str) -> None:
        """Count a live connection in, or refuse it (429 per address, 503 in all)."""
        if self.closing:
            raise StreamsFull("the server is restarting; reconnect shortly", "live_closing")
        if self._connections >= self._max:
            raise StreamsFull("this server holds as many live connections as it can",
                              "live_full")
        if self._per_address[address] >= self._max_per_address:
            raise TooManyStreams("too many live connections from this address",
                                 "live_per_address")
        self._connections += 1
        self._per_address[address] += 1

    def disconnect(self, address: str) -> None:
        self._connections -= 1
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]

    def join(self, board: str, address: str, send: Send, message: Callable[[Frames], Message],
             ping: Message | None, direct: ChunkWriter | None = None,
             season_message: Callable[[Frames], Message] | None = None) -> Subscriber:
        """Subscribe a connection (already counted in by ``connect``) to a board."""
        feed = self._feed(board)
        subscriber = Subscriber(address, feed.newest, send, message, ping, direct,
                                season_message)
        subscriber.board = board
        feed.subscribers.add(subscriber)
        return subscriber

    def leave(self, subscriber: Subscriber) -> None:
        subscriber.closed = True  # a sweep already under way may still hold it: skip it
        feed = self._feeds.get(subscriber.board)
        if feed is not None:
            feed.subscribers.discard(subscriber)

    def board_gone(self, board: str) -> None:
        """A board deleted: its streams end (a board id is never used again)."""
        self._gone.add(board)
        feed = self._feeds.pop(board, None)
        if feed is not None:
            feed.stop()
            for subscriber in list(feed.subscribers):
                subscriber.close("board_gone")

    # -- snapshots ----------------------------------------------------------------

    def offer(self, message: object) -> None:
        """A message from the broker: a snapshot is the newest state of its board,
        swept out now or when due."""
        if isinstance(message, Snapshot) and message.board not in self._gone:
            self._feed(message.board).offer(message)

    # -- walking subscribers ------------------------------------------------------

    def walk(self, steps: Iterator[None]) -> None:
        """Run a walk's first slice now, then one per turn of the loop."""
        try:
            next(steps)
        except StopIteration:
            return
        asyncio.get_running_loop().call_soon(self.walk, steps)

    def _drop(self, subscriber: Subscriber, reason: str) -> None:
        subscriber.close(reason)
        self.leave(subscriber)
        self._on_drop(reason)
        log.info("stream_dropped", reason=reason, address=subscriber.address)
        # Its writer is stuck in a send that waits for the client: cancel it there.
        if subscriber.task is not None:
            subscriber.task.cancel()

    async def _beat(self) -> None:
        # Beats at half the heartbeat: a ping owed at one beat is written by the next,
        # so no subscriber goes longer than ``heartbeat`` without one.
        while True:
            await asyncio.sleep(self._heartbeat_every / 2)
            everyone = [s for feed in self._feeds.values() for s in feed.subscribers]
            self.walk(self._beats(everyone))

    def _beats(self, subscribers: list[Subscriber]) -> Iterator[None]:
        for live in self.slices(subscribers):
            for subscriber in live:
                subscriber.beat()
            yield

    def slices(self, subscribers: list[Subscriber]) -> Iterator[list[Subscriber]]:
        """``subscribers``, ``SWEEP_SLICE`` at a time, less those whose write has been
        stuck past the stall deadline: those are dropped here."""
        for start in range(0, len(subscribers), SWEEP_SLICE):
            stalled_before = time.monotonic() - self._stall
            live = []
            for subscriber in subscribers[start:start + SWEEP_SLICE]:
                stuck_since = subscriber.stuck_since
                if stuck_since is not None and stuck_since < stalled_before:
                    self._drop(subscriber, "slow")
                else:
                    live.append(subscriber)
            yield live
