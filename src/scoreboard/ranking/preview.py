"""Ranks of a batch of entries before it is applied: one algorithm for every Ranking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sortedcontainers import SortedList

from scoreboard.model import Entry


class BatchPreview:
    """rank - 1 = committed keys ahead of the new key, minus the committed keys that the
    batch replaces ahead of it, plus the batch's own newest keys ahead of it.

    ``key(entry)`` is the ranking's own sortable key of an entry (ascending is rank
    order); ``committed_ahead(key)`` counts committed keys before ``key``;
    ``committed_key(user)`` is the user's committed key. O(log n) per entry besides
    those two.
    """

    def __init__(self, key: Callable[[Entry], Any], committed_ahead: Callable[[Any], int],
                 committed_key: Callable[[str], Any]) -> None:
        self._key = key
        self._committed_ahead = committed_ahead
        self._committed_key = committed_key
        self._pending: dict[str, Any] = {}
        self._added: SortedList = SortedList()
        self._replaced: SortedList = SortedList()

    def rank_after(self, entry: Entry) -> int:
        key = self._key(entry)
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
