"""Personal pushes: each signed-in WebSocket client's own rank, score and neighbours on
each board it follows, pushed when they change (API.md "Your own rank").

Every commit publishes the entries it moved on each board (``Moves``: the user, its
place before and after; a place is the score in rank order, smaller is better). This
instance keeps, per board, the users signed in to it here ("viewers"), each with the
places of its own entry and of the entries just above and below it, as last computed,
and the viewers in place order. A move from place a to place b changes what a viewer
sees only if it crosses the viewer or lands next to it: when [min(a, b), max(a, b)]
meets [the viewer's above, the viewer's below]. Those viewers are found by bisection —
the ones inside the span and the nearest on either side — so a commit costs
O(log viewers + viewers touched), whatever the board's size. Touched viewers are read
again (one ``around`` each) at most once per push interval, the first change after a
quiet spell at once, and pushed only when what they see differs from what they were
last sent. Moves that arrive while a read is under way are checked again against its
results, so none is lost in between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import orjson
import structlog
from sortedcontainers import SortedList

from scoreboard.broker.base import Message, Moves
from scoreboard.model import MAX_TOTAL, Board, RankedUser, Sort, place
from scoreboard.ranking.base import Ranking

BEYOND = MAX_TOTAL + 1  # past every place: "not on the board" in a span
READS_AT_ONCE = 256  # ``around`` reads in flight per board (Redis: one round trip each)

log = structlog.get_logger("scoreboard.personal")


class MeSink(Protocol):
    """A signed-in connection: takes a board's newest ``me`` message (newest wins)."""

    def me(self, board: str, text: str) -> None: ...


class _Viewer:
    __slots__ = ("above", "below", "place", "sinks", "text")

    def __init__(self) -> None:
        self.sinks: set[MeSink] = set()
        self.place: int | None = None  # None: no entry
        self.above = -BEYOND  # the neighbours' places (beyond either end: none)
        self.below = BEYOND
        self.text: str | None = None  # what was last sent


class _Board:
    def __init__(self, board: Board) -> None:
        self.id = board.id
        self.sort: Sort = board.spec.sort
        self.season = board.season
        self.viewers: dict[str, _Viewer] = {}
        self.places = SortedList()  # (place, user id) of the viewers with an entry
        self.dirty: set[str] = set()
        self.reading = False
        self.heard_while_reading: list[Moves] = []
        self.last_read = float("-inf")
        self.timer: asyncio.TimerHandle | None = None


class Personal:
    def __init__(self, ranking: Ranking, interval: float,
                 on_sent: Callable[[int], None] = lambda count: None,
                 on_coalesced: Callable[[int], None] = lambda count: None) -> None:
        self._ranking = ranking
        self._interval = interval
        self._on_sent = on_sent
        self._on_coalesced = on_coalesced
        self._boards: dict[str, _Board] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- connections

    def watch(self, board: Board, user_id: str, sink: MeSink) -> None:
        """``sink`` follows ``user_id`` on ``board``: its first message at once."""
        watched = self._boards.get(board.id)
        if watched is None:
            watched = self._boards[board.id] = _Board(board)
        viewer = watched.viewers.get(user_id)
        if viewer is None:
            viewer = watched.viewers[user_id] = _Viewer()
        viewer.sinks.add(sink)
        if viewer.text is not None and user_id not in watched.dirty:
            sink.me(board.id, viewer.text)  # what the user's other connections were sent
            self._on_sent(1)
            return
        watched.dirty.add(user_id)
        self._schedule(watched, at_once=True)

    def unwatch(self, board_id: str, user_id: str, sink: MeSink) -> None:
        watched = self._boards.get(board_id)
        viewer = watched.viewers.get(user_id) if watched else None
        if watched is None or viewer is None:
            return
        viewer.sinks.discard(sink)
        if viewer.sinks:
            return
        del watched.viewers[user_id]
        watched.dirty.discard(user_id)
        if viewer.place is not None:
            watched.places.discard((viewer.place, user_id))
        if not watched.viewers:
            if watched.timer is not None:
                watched.timer.cancel()
            del self._boards[board_id]

    async def stop(self) -> None:
        for watched in self._boards.values():
            if watched.timer is not None:
                watched.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- moves, from this instance's writer and every other's

    def heard(self, message: Message) -> None:
        if not isinstance(message, Moves):
            return
        watched = self._boards.get(message.board)
        if watched is None or message.season < watched.season:
            return  # nobody follows it here, or a closed season's, applied late
        if watched.reading:
            watched.heard_while_reading.append(message)
        self._mark(watched, message)
        self._schedule(watched)

    def _mark(self, watched: _Board, message: Moves) -> None:
        before = len(watched.dirty)
        touched = 0
        if message.moves is None or message.season > watched.season:
            watched.season = max(watched.season, message.season)
            touched = len(watched.viewers)
            watched.dirty.update(watched.viewers)
        else:
            for user_id, was, now in message.moves:
                touched += self._touch(watched, user_id, was, now)
        self._on_coalesced(touched - (len(watched.dirty) - before))

    def _touch(self, watched: _Board, user_id: str, was: int | None, now: int | None) -> int:
        """Mark the viewers one move changes; how many were marked (some already were)."""
        dirty, places = watched.dirty, watched.places
        marked = 0
        if user_id in watched.viewers:
            dirty.add(user_id)
            marked += 1
        low, high = sorted((BEYOND if was is None else was, BEYOND if now is None else now))
        first = places.bisect_left((low, ""))
        end = places.bisect_left((high + 1, ""))
        for _, viewer_id in places.islice(first, end):  # crossed, or moved beside
            dirty.add(viewer_id)
            marked += 1
        if first > 0:  # the nearest viewers above the span: did their below move?
            nearest = places[first - 1][0]
            for _, viewer_id in places.irange((nearest, ""), (nearest, "\U0010ffff")):
                if watched.viewers[viewer_id].below >= low:
                    dirty.add(viewer_id)
                    marked += 1
        if end < len(places):  # the nearest below it: did their above move?
            nearest = places[end][0]
            for _, viewer_id in places.irange((nearest, ""), (nearest, "\U0010ffff")):
                if watched.viewers[viewer_id].above <= high:
                    dirty.add(viewer_id)
                    marked += 1
        return marked

    # -- reading and pushing, at most once per interval per board

    def _schedule(self, watched: _Board, at_once: bool = False) -> None:
        if watched.reading or not watched.dirty:
            return  # a read under way schedules the next when it ends
        wait = 0.0 if at_once else watched.last_read + self._interval - time.monotonic()
        if wait <= 0:
            if watched.timer is not None:
                watched.timer.cancel()
            self._start(watched)
        elif watched.timer is None:
            watched.timer = asyncio.get_running_loop().call_later(wait, self._start, watched)

    def _start(self, watched: _Board) -> None:
        watched.timer = None
        if watched.reading or not watched.dirty or self._boards.get(watched.id) is not watched:
            return
        watched.reading = True
        watched.last_read = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._read(watched))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, watched: _Board) -> None:
        users = list(watched.dirty)
        watched.dirty.clear()
        try:
            for start in range(0, len(users), READS_AT_ONCE):
                batch = users[start:start + READS_AT_ONCE]
                views = await asyncio.gather(*(
                    self._ranking.around(watched.id, user_id, 1, 1) for user_id in batch))
                for user_id, view in zip(batch, views, strict=True):
                    self._show(watched, user_id, view)
        except Exception:
            log.exception("personal_read_failed", board=watched.id)
            watched.dirty.update(u for u in users if u in watched.viewers)
        finally:
            watched.reading = False
            heard, watched.heard_while_reading = watched.heard_while_reading, []
            for message in heard:  # checked again against what was just read
                self._mark(watched, message)
            self._schedule(watched)

    def _show(self, watched: _Board, user_id: str, view: list[RankedUser] | None) -> None:
        viewer = watched.viewers.get(user_id)
        if viewer is None:
            return  # gone meanwhile
        if viewer.place is not None:
            watched.places.discard((viewer.place, user_id))
        me = above = below = None
        if view is not None:
            i = next((i for i, e in enumerate(view) if e.user_id == user_id), None)
            if i is not None:
                me = view[i]
                above = view[i - 1] if i > 0 else None
                below = view[i + 1] if i + 1 < len(view) else None
        sort = watched.sort
        viewer.place = None if me is None else place(sort, me.score)
        viewer.above = -BEYOND if above is None else place(sort, above.score)
        viewer.below = BEYOND if below is None else place(sort, below.score)
        if viewer.place is not None:
            watched.places.add((viewer.place, user_id))
        text = me_message(watched.id, user_id, me, above, below)
        if text != viewer.text:
            viewer.text = text
            for sink in viewer.sinks:
                sink.me(watched.id, text)
            self._on_sent(len(viewer.sinks))


def me_message(board: str, user_id: str, me: RankedUser | None, above: RankedUser | None,
               below: RankedUser | None) -> str:
    return orjson.dumps({
        "type": "me", "board": board, "user_id": user_id,
        "rank": me.rank if me else None, "score": me.score if me else None,
        "above": above.as_dict() if above else None,
        "below": below.as_dict() if below else None,
    }).decode()
