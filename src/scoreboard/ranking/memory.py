"""MemoryRanking: an order-statistics list per board, in this process. Serves a single
node only.

Each entry has one key in its board's ``SortedList``; its index is the rank minus one,
found by bisection in O(log n). A key is a ``bytes``: the score's place (the score on
an asc board, ``MAX_TOTAL - score`` on a desc one) and the seq as two big-endian 64-bit
words, then the user id, so that bytewise order is rank order. Bytes hold a million
entries in about half the memory of tuples of ints and strings, and the garbage
collector never walks them (a tuple it would). Names and bans are the user's, on
every board.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence

from sortedcontainers import SortedList

from scoreboard.model import MAX_TOTAL, Board, Entry, RankedUser, Sort
from scoreboard.ranking.base import TOP_WATCHED, Top, next_version
from scoreboard.ranking.preview import BatchPreview
from scoreboard.store.base import Transaction

_PLACE = struct.Struct(">QQ")
_SEQ = 16  # where the user id starts
SUBLISTS_FREED_PER_TURN = 20  # of a dropped order: ~20,000 keys, ~1 ms a turn of the loop


class _Order:
    """One board's current season: its keys in rank order, each user's key, its version."""

    __slots__ = ("desc", "keys", "order", "season", "sort", "version")

    def __init__(self, sort: Sort, season: int, version: int) -> None:
        self.sort = sort
        self.desc = sort == "desc"
        self.season = season
        self.order: SortedList = SortedList()
        self.keys: dict[str, bytes] = {}
        self.version = version

    def key(self, score: int, seq: int, user_id: str) -> bytes:
        place = MAX_TOTAL - score if self.desc else score
        return _PLACE.pack(place, seq) + user_id.encode()

    def key_of(self, entry: Entry) -> bytes:
        return self.key(entry.score, entry.seq, entry.user_id)

    def unkey(self, key: bytes) -> tuple[int, int, str]:
        """score, seq, user id"""
        place, seq = _PLACE.unpack_from(key)
        return (MAX_TOTAL - place if self.desc else place), seq, key[_SEQ:].decode()

    def put(self, entry: Entry) -> bool:
        """Apply an entry if newer than the one held; whether the watched top changed."""
        new = self.key_of(entry)
        old = self.keys.get(entry.user_id)
        if old is not None and _PLACE.unpack_from(old)[1] >= entry.seq:
            return False  # not newer than what we hold
        changed = False
        if old is not None:
            changed = self.order.bisect_left(old) < TOP_WATCHED
            self.order.remove(old)
        self.order.add(new)
        self.keys[entry.user_id] = new
        return changed or self.order.bisect_left(new) < TOP_WATCHED

    def take(self, user_id: str) -> bool:
        key = self.keys.pop(user_id, None)
        if key is None:
            return False
        changed: bool = self.order.bisect_left(key) < TOP_WATCHED
        self.order.remove(key)
        return changed

    def free_later(self) -> None:
        """Empty this order now, and free its keys a slice per turn of the loop: freeing
        a million at once holds the loop (and every write) ~50-80 ms. The user-id map
        goes at once (it frees only the ids, ~13 ms a million: its keys live on in the
        sublists); the sublists then go a few per turn."""
        lists = self.order._lists  # sortedcontainers' sublists (the version is pinned)
        self.keys.clear()
        self.keys, self.order = {}, SortedList()

        def free_some() -> None:
            for _ in range(SUBLISTS_FREED_PER_TURN):
                if not lists:
                    return
                lists.pop()
            asyncio.get_running_loop().call_soon(free_some)

        free_some()


class MemoryRanking:
    def __init__(self) -> None:
        self._boards: dict[str, _Order] = {}
        self._names: dict[str, str] = {}
        self._banned: set[str] = set()

    async def rebuild(self, board: Board, entries: Iterable[Entry],
                      banned: set[str] | None) -> None:
        if banned is not None:
            self._banned = set(banned)
        previous = self._boards.get(board.id)
        order = _Order(board.spec.sort, board.season,
                       next_version(previous.version if previous else 0))
        keys, names, skip = order.keys, self._names, self._banned
        pack, desc = _PLACE.pack, order.desc  # a million times: the key made inline
        for _, _, user_id, score, seq, name in entries:
            if user_id not in skip:
                keys[user_id] = pack(MAX_TOTAL - score if desc else score, seq) + user_id.encode()
                if name:
                    names[user_id] = name
        order.order = SortedList(keys.values())
        self._boards[board.id] = order

    async def drop(self, board_id: str) -> None:
        order = self._boards.pop(board_id, None)
        if order is not None:
            order.free_later()

    async def new_season(self, board: Board) -> bool:
        return self._advance(board.id, board.season)

    def _advance(self, board_id: str, season: int) -> bool:
        order = self._boards.get(board_id)
        if order is None or order.season >= season:
            return False
        # The closed season's keys go with the old order (its standings are the store's).
        self._boards[board_id] = _Order(order.sort, season, next_version(order.version))
        order.free_later()
        return True

    async def close_season(self, board_id: str, season: int) -> None:
        return None  # nothing of a closed season is kept here

    async def apply(self, entries: Sequence[Entry]) -> set[str]:
        changed: set[str] = set()
        for entry in entries:
            if entry.name:
                self._names[entry.user_id] = entry.name
            order = self._boards.get(entry.board)
            if order is None or entry.user_id in self._banned or entry.season < order.season:
                continue
            if entry.season > order.season:
                self._advance(entry.board, entry.season)
                changed.add(entry.board)
                order = self._boards[entry.board]
            if order.put(entry):
                changed.add(entry.board)
        return self._bumped(changed)

    async def remove(self, board_id: str, user_id: str) -> bool:
        order = self._boards.get(board_id)
        changed = order is not None and order.take(user_id)
        if changed:
            self._bumped({board_id})
        return changed

    async def ban(self, user_id: str) -> set[str]:
        self._banned.add(user_id)
        return self._bumped({board_id for board_id, order in self._boards.items()
                             if order.take(user_id)})

    async def unban(self, user_id: str, entries: Sequence[Entry]) -> set[str]:
        self._banned.discard(user_id)
        return await self.apply(entries)

    def _bumped(self, changed: set[str]) -> set[str]:
        for board_id in changed:
            order = self._boards[board_id]
            order.version = next_version(order.version)
        return changed

    async def top(self, board_id: str, limit: int, after: Entry | None = None) -> Top:
        order = self._boards.get(board_id)
        if order is None:
            return Top(0, [])
        start = 0 if after is None else order.order.bisect_right(order.key_of(after))
        keys = list(order.order.islice(start, start + limit + 1))
        entries = [self._ranked(order, start + i + 1, key) for i, key in enumerate(keys[:limit])]
        last = entries[-1] if len(keys) > limit else None
        return Top(order.version, entries, None if last is None else
                   Entry(board_id, order.season, last.user_id, last.score, last.seq))

    async def get(self, board_id: str, user_id: str) -> RankedUser | None:
        order = self._boards.get(board_id)
        key = order.keys.get(user_id) if order is not None else None
        if order is None or key is None:
            return None
        return self._ranked(order, order.order.bisect_left(key) + 1, key)

    async def around(self, board_id: str, user_id: str, above: int,
                     below: int) -> list[RankedUser] | None:
        order = self._boards.get(board_id)
        key = order.keys.get(user_id) if order is not None else None
        if order is None or key is None:
            return None
        start, stop = window(order.order.bisect_left(key), above, below, len(order.order))
        return [self._ranked(order, start + i + 1, k)
                for i, k in enumerate(order.order.islice(start, stop))]

    async def ranks(self, board_id: str, user_ids: Sequence[str]) -> list[RankedUser]:
        found = [await self.get(board_id, user_id) for user_id in dict.fromkeys(user_ids)]
        return sorted((r for r in found if r is not None), key=lambda r: r.rank)

    async def count(self, board_id: str) -> int:
        order = self._boards.get(board_id)
        return len(order.order) if order is not None else 0

    async def ranks_after(self, tx: Transaction, boards: dict[str, Board],
                          entries: Sequence[Entry]) -> list[int]:
        previews: dict[str, BatchPreview] = {}
        ranks = []
        for entry in entries:
            preview = previews.get(entry.board)
            if preview is None:
                order = self._boards.get(entry.board)
                if order is None or order.season != entry.season:  # a season begun: empty
                    order = _Order(boards[entry.board].spec.sort, entry.season, 0)
                preview = previews[entry.board] = BatchPreview(
                    order.key_of, order.order.bisect_left, order.keys.get)
            ranks.append(preview.rank_after(entry))
        return ranks

    def _ranked(self, order: _Order, rank: int, key: bytes) -> RankedUser:
        score, seq, user_id = order.unkey(key)
        return RankedUser(rank, user_id, self._names.get(user_id, user_id), score, seq)


def window(index: int, above: int, below: int, size: int) -> tuple[int, int]:
    """The slice ``[start, stop)`` around ``index``: ``above`` before and ``below`` after,
    slid at either end so it still holds ``above + below + 1`` where there are that many."""
    start = max(0, index - above)
    stop = min(size, index + below + 1)
    want = above + below + 1
    if stop - start < want:
        if start == 0:
            stop = min(size, want)
        else:
            start = max(0, stop - want)
    return start, stop
