"""MemoryRanking: an order-statistics list in this process. Serves a single node only.

Each user has one key ``(-total, seq, user_id)`` in a ``SortedList``; its index is the
rank minus one, found by bisection in O(log n).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sortedcontainers import SortedList

from scoreboard.model import RankedUser, UserTotal
from scoreboard.ranking.base import TOP_WATCHED, Top, next_version
from scoreboard.ranking.preview import BatchPreview, Key, key_of
from scoreboard.store.base import Transaction


class MemoryRanking:
    def __init__(self) -> None:
        self._order: SortedList = SortedList()
        self._keys: dict[str, Key] = {}
        self._names: dict[str, str] = {}
        self._banned: set[str] = set()
        self._version = 0

    async def rebuild(self, totals: Iterable[UserTotal], banned: set[str]) -> None:
        self._banned = set(banned)
        totals = [t for t in totals if t.user_id not in banned]
        self._keys = {t.user_id: key_of(t) for t in totals}
        self._names = {t.user_id: t.name for t in totals if t.name}
        self._order = SortedList(self._keys.values())
        self._version = next_version(self._version)

    async def apply(self, totals: Sequence[UserTotal]) -> bool:
        top_changed = False
        for t in totals:
            if t.user_id in self._banned:
                continue
            new = key_of(t)
            old = self._keys.get(t.user_id)
            if old is not None and old[1] >= new[1]:
                continue  # not newer than what we hold
            if old is not None:
                top_changed |= self._order.bisect_left(old) < TOP_WATCHED
                self._order.remove(old)
            self._order.add(new)
            self._keys[t.user_id] = new
            top_changed |= self._order.bisect_left(new) < TOP_WATCHED
            if t.name:
                self._names[t.user_id] = t.name
        if top_changed:
            self._version = next_version(self._version)
        return top_changed

    async def ban(self, user_id: str) -> bool:
        self._banned.add(user_id)
        key = self._keys.pop(user_id, None)
        if key is None:
            return False
        top_changed: bool = self._order.bisect_left(key) < TOP_WATCHED
        self._order.remove(key)
        if top_changed:
            self._version = next_version(self._version)
        return top_changed

    async def unban(self, user_id: str, total: UserTotal | None) -> bool:
        self._banned.discard(user_id)
        return await self.apply([total]) if total is not None else False

    async def top(self, limit: int) -> Top:
        entries = [self._ranked(i + 1, key) for i, key in enumerate(self._order.islice(0, limit))]
        return Top(self._version, entries)

    async def get(self, user_id: str) -> RankedUser | None:
        key = self._keys.get(user_id)
        if key is None:
            return None
        return self._ranked(self._order.bisect_left(key) + 1, key)

    async def ranks_after(self, tx: Transaction, totals: Sequence[UserTotal]) -> list[int]:
        preview = BatchPreview(self._order.bisect_left, self._keys.get)
        return [preview.rank_after(t) for t in totals]

    def _ranked(self, rank: int, key: Key) -> RankedUser:
        user_id = key[2]
        return RankedUser(rank, user_id, self._names.get(user_id, user_id), -key[0])
