"""Ranks of a batch of totals before it is applied: one algorithm for every Ranking."""

from __future__ import annotations

from collections.abc import Callable

from sortedcontainers import SortedList

from scoreboard.model import Entry, Sort
from scoreboard.ranking.base import Key, key_of


class BatchPreview:
    """rank - 1 = committed keys ahead of the new key, minus the committed keys that the
    batch replaces ahead of it, plus the batch's own newest keys ahead of it.

    ``committed_ahead(key)`` counts committed keys before ``key``; ``committed_key(user)``
    is the user's committed key. O(log n) per total besides those two.
    """

    def __init__(self, sort: Sort, committed_ahead: Callable[[Key], int],
                 committed_key: Callable[[str], Key | None]) -> None:
        self._sort = sort
        self._committed_ahead = committed_ahead
        self._committed_key = committed_key
        self._pending: dict[str, Key] = {}
        self._added: SortedList = SortedList()
        self._replaced: SortedList = SortedList()

    def rank_after(self, entry: Entry) -> int:
        key = key_of(self._sort, entry.score, entry.seq, entry.user_id)
        earlier = self._pending.get(entry.user_id)
        if earlier is not None:
            self._added.remove(earlier)
        else:
            committed = self._committed_key(entry.user_id)
            if committed is not None:
                self._replaced.add(committed)
        ahead: int = (
            self._committed_ahead(key)
            - self._replaced.bisect_left(key)
            + self._added.bisect_left(key)
        )
        self._added.add(key)
        self._pending[entry.user_id] = key
        return ahead + 1
