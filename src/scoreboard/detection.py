"""Detection: which users behave unlike the rest.

A user is flagged, with a reason, when

- ``velocity``: their points in the last minute — counted in the store, so that their
  writes on every instance count — exceed ``VELOCITY_FACTOR`` times the 95th percentile
  of the users active in that minute, and at least ``VELOCITY_FLOOR`` points (so a quiet
  board does not flag its only player). The population is the users this instance saw
  write in that minute: behind a load balancer, a sample of all of them;
- ``too_fast``: they redeemed an action ticket before its minimum time;
- ``ticket_replays``, ``foreign_writes``, ``rate_limited``: that refusal happened
  ``REPEATS`` times within a minute on this instance.

Flags are kept in the store once per user and reason, whichever instance raised them,
so ``/admin/suspicious`` reads the same everywhere. State here is bounded: windows hold
one minute, and idle users are forgotten.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog

WINDOW_SECONDS = 60.0
VELOCITY_FACTOR = 10.0
VELOCITY_FLOOR = 500
REPEATS = 3
POPULATION_EVERY_SECONDS = 5.0
CHECK_EVERY_SECONDS = 0.25
MAX_TRACKED_USERS = 100_000

_REFUSAL_FLAGS = {
    "ticket_too_early": ("too_fast", 1),
    "ticket_redeemed": ("ticket_replays", REPEATS),
    "other_user": ("foreign_writes", REPEATS),
    "ticket_not_yours": ("foreign_writes", REPEATS),
    "rate_limited": ("rate_limited", REPEATS),
}

PointsSince = Callable[[Sequence[str], int], Awaitable[dict[str, int]]]
Flagger = Callable[[str, str], None]

log = structlog.get_logger("scoreboard.detection")


class Refusals:
    """Refused writes by verified users, per user and reason, over the last minute."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._users: dict[str, dict[str, deque[float]]] = {}
        self._seen: dict[str, float] = {}

    def refusal(self, user_id: str, reason: str) -> str | None:
        """The flag reason this refusal trips, if any."""
        rule = _REFUSAL_FLAGS.get(reason)
        if rule is None:
            return None
        flag, repeats = rule
        now = self._clock()
        if user_id not in self._users and len(self._users) >= MAX_TRACKED_USERS:
            self._forget_idle(now)
        times = self._users.setdefault(user_id, {}).setdefault(reason, deque(maxlen=REPEATS))
        self._seen[user_id] = now
        times.append(now)
        if len(times) >= repeats and now - times[0] <= WINDOW_SECONDS:
            return flag
        return None

    def _forget_idle(self, now: float) -> None:
        idle = [u for u, seen in self._seen.items() if seen <= now - WINDOW_SECONDS]
        for user_id in idle or list(self._seen)[: len(self._seen) // 10]:
            self._users.pop(user_id, None)
            self._seen.pop(user_id, None)


class Velocity:
    """Checks the users who wrote since the last check against the population.

    ``saw`` is called after each commit; ``run`` checks at most every
    ``CHECK_EVERY_SECONDS``, with one store query for all the users seen meanwhile.
    """

    def __init__(self, points_since: PointsSince, clock: Callable[[], float] = time.time,
                 check_every: float = CHECK_EVERY_SECONDS) -> None:
        self._points_since = points_since
        self._clock = clock
        self._check_every = check_every
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._recent: dict[str, tuple[int, float]] = {}  # user -> (points, when counted)
        self._p95 = 0
        self._p95_at = float("-inf")

    def saw(self, user_ids: Iterable[str]) -> None:
        if len(self._pending) < MAX_TRACKED_USERS:
            self._pending.update(user_ids)
            self._wake.set()

    async def run(self, flag: Flagger) -> None:
        """Check, for as long as the service runs; ``flag(user_id, "velocity")`` raises one."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._check_every)  # more writes join this check
            self._wake.clear()
            users, self._pending = sorted(self._pending), set()
            try:
                for user_id in await self.check(users):
                    flag(user_id, "velocity")
            except Exception:  # the check must outlive a store that is away
                log.warning("velocity_check_failed", users=len(users))

    async def check(self, users: Sequence[str]) -> list[str]:
        """Of ``users``, those whose points in the last minute are unusual."""
        if not users:
            return []
        now = self._clock()
        points = await self._points_since(users, int((now - WINDOW_SECONDS) * 1000))
        for user_id in users:
            self._recent[user_id] = (points.get(user_id, 0), now)
        threshold = max(VELOCITY_FLOOR, VELOCITY_FACTOR * self._population(now))
        return [user_id for user_id in users if points.get(user_id, 0) >= threshold]

    def _population(self, now: float) -> int:
        """The 95th percentile of points in the last minute of the users seen, refreshed
        every 5 s (and the users not seen for a minute forgotten)."""
        if now - self._p95_at >= POPULATION_EVERY_SECONDS or len(self._recent) > MAX_TRACKED_USERS:
            self._p95_at = now
            cutoff = now - WINDOW_SECONDS
            self._recent = {u: pc for u, pc in self._recent.items() if pc[1] > cutoff}
            totals = sorted(points for points, _ in self._recent.values() if points)
            self._p95 = totals[int(0.95 * (len(totals) - 1))] if totals else 0
        return self._p95
