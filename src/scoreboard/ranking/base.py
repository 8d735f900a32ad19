"""The Ranking: order, top-N and rank of a user — a cache of the store's totals."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from scoreboard.model import RankedUser, UserTotal

TOP_WATCHED = 100  # the largest page GET /scores serves; changes below it are not "top" changes


class RankPreview(Protocol):
    async def rank_after(self, total: UserTotal) -> int:
        """The rank ``total`` gets once it and every total previewed before it are applied."""


class Ranking(Protocol):
    """Orders users by total, highest first; equal totals by ``seq``, smaller first.

    Guarantee: ``apply`` takes absolute totals, so applying the same total twice, or
    an older total after a newer one (smaller ``seq``), changes nothing.
    """

    async def rebuild(self, totals: Iterable[UserTotal]) -> None:
        """Replace everything with ``totals`` (from the store)."""

    async def apply(self, totals: Sequence[UserTotal]) -> bool:
        """Apply committed totals; return whether the top ``TOP_WATCHED`` changed."""

    async def remove(self, user_id: str) -> bool:
        """Take a user off the board (a ban); return whether the watched top changed."""

    async def top(self, limit: int) -> list[RankedUser]: ...

    async def get(self, user_id: str) -> RankedUser | None: ...

    def preview(self) -> RankPreview:
        """Ranks for a batch of not yet committed totals, without changing anything."""
