"""MemoryRanking: an order-statistics list in this process. Serves a single node only.

Each user has one key ``(-total, seq, user_id)`` in a ``SortedList``; its index is the
rank minus one, found by bisection in O(log n).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sortedcontainers import SortedList

from scoreboard.model import RankedUser, UserTotal
from scoreboard.ranking.base import TOP_WATCHED

Key = tuple[int, int, str]


def _key(total: UserTotal) -> Key:
    return (-total.total, total.seq, total.user_id)


class _MemoryPreview:
    """Ranks of a batch before it is applied, in O(log n) each.

    rank - 1 = committed keys ahead of the new key, minus the committed keys that the
    batch replaces, plus the batch's own new keys ahead of it.
    """

    def __init__(self, ranking: MemoryRanking) -> None:
        self._ranking = ranking
        self._pending: dict[str, Key] = {}
        self._added: SortedList = SortedList()
        self._replaced: SortedList = SortedList()

    async def rank_after(self, total: UserTotal) -> int:
        key = _key(total)
        earlier = self._pending.get(total.user_id)
        if earlier is not None:
            self._added.remove(earlier)
        else:
            committed = self._ranking._keys.get(total.user_id)
            if committed is not None:
                self._replaced.add(committed)
        ahead: int = (
            self._ranking._order.bisect_left(key)
            - self._replaced.bisect_left(key)
            + self._added.bisect_left(key)
        )
        self._added.add(key)
        self._pending[total.user_id] = key
        return ahead + 1


class MemoryRanking:
    def __init__(self) -> None:
        self._order: SortedList = SortedList()
        self._keys: dict[str, Key] = {}
        self._names: dict[str, str] = {}

    async def rebuild(self, totals: Iterable[UserTotal]) -> None:
        totals = list(totals)
        self._keys = {t.user_id: _key(t) for t in totals}
        self._names = {t.user_id: t.name for t in totals if t.name}
        self._order = SortedList(self._keys.values())

    async def apply(self, totals: Sequence[UserTotal]) -> bool:
        top_changed = False
        for t in totals:
            new = _key(t)
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
        return top_changed

    async def remove(self, user_id: str) -> bool:
        key = self._keys.pop(user_id, None)
        if key is None:
            return False
        top_changed: bool = self._order.bisect_left(key) < TOP_WATCHED
        self._order.remove(key)
        return top_changed

    async def top(self, limit: int) -> list[RankedUser]:
        return [self._ranked(i + 1, key) for i, key in enumerate(self._order.islice(0, limit))]

    async def get(self, user_id: str) -> RankedUser | None:
        key = self._keys.get(user_id)
        if key is None:
            return None
        return self._ranked(self._order.bisect_left(key) + 1, key)

    def preview(self) -> _MemoryPreview:
        return _MemoryPreview(self)

    def _ranked(self, rank: int, key: Key) -> RankedUser:
        user_id = key[2]
        return RankedUser(rank, user_id, self._names.get(user_id, user_id), -key[0])
