"""Detection: which users behave unlike the rest.

Fed with every accepted increment and every refused write whose user is known (a
verified ``sub``). A user is flagged, with a reason, when

- ``velocity``: their points in the last minute exceed ``VELOCITY_FACTOR`` times the
  population's 95th percentile (over users active in that minute), and at least
  ``VELOCITY_FLOOR`` points — so a quiet board does not flag its only player;
- ``too_fast``: they redeemed an action ticket before its minimum time;
- ``ticket_replays``, ``foreign_writes``, ``rate_limited``: that refusal happened
  ``REPEATS`` times within a minute (replayed tickets; another user's score or ticket;
  the rate limit).

Flags are returned once, when first raised, so the caller can record them durably.
State is bounded: windows hold one minute, and idle users are forgotten.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_SECONDS = 60.0
VELOCITY_FACTOR = 10.0
VELOCITY_FLOOR = 500
REPEATS = 3
POPULATION_EVERY_SECONDS = 5.0
MAX_TRACKED_USERS = 100_000

_REFUSAL_FLAGS = {
    "ticket_too_early": ("too_fast", 1),
    "ticket_redeemed": ("ticket_replays", REPEATS),
    "other_user": ("foreign_writes", REPEATS),
    "ticket_not_yours": ("foreign_writes", REPEATS),
    "rate_limited": ("rate_limited", REPEATS),
}


@dataclass
class Flag:
    reasons: set[str]
    since: float


@dataclass
class _Activity:
    points: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0
    refusals: dict[str, deque[float]] = field(default_factory=dict)
    seen: float = 0.0


class Detector:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._users: dict[str, _Activity] = {}
        self.flags: dict[str, Flag] = {}
        self._p95 = 0
        self._p95_at = float("-inf")

    def restore(self, user_id: str, reasons: set[str], since: float) -> None:
        """A flag raised before a restart."""
        self.flags[user_id] = Flag(set(reasons), since)

    def points(self, user_id: str, points: int) -> str | None:
        """An accepted increment; the new flag reason, if this raised one."""
        now = self._clock()
        activity = self._activity(user_id, now)
        activity.points.append((now, points))
        activity.total += points
        self._expire(activity, now)
        if activity.total >= max(VELOCITY_FLOOR, VELOCITY_FACTOR * self._population(now)):
            return self._flag(user_id, "velocity", now)
        return None

    def refusal(self, user_id: str, reason: str) -> str | None:
        """A refused write by a verified user; the new flag reason, if this raised one."""
        rule = _REFUSAL_FLAGS.get(reason)
        if rule is None:
            return None
        flag, repeats = rule
        now = self._clock()
        activity = self._activity(user_id, now)
        times = activity.refusals.setdefault(reason, deque(maxlen=REPEATS))
        times.append(now)
        if len(times) >= repeats and now - times[0] <= WINDOW_SECONDS:
            return self._flag(user_id, flag, now)
        return None

    def _flag(self, user_id: str, reason: str, now: float) -> str | None:
        flag = self.flags.get(user_id)
        if flag is None:
            self.flags[user_id] = Flag({reason}, now)
            return reason
        if reason in flag.reasons:
            return None
        flag.reasons.add(reason)
        return reason

    def _activity(self, user_id: str, now: float) -> _Activity:
        activity = self._users.get(user_id)
        if activity is None:
            if len(self._users) >= MAX_TRACKED_USERS:
                self._forget_idle(now)
            activity = self._users[user_id] = _Activity()
        activity.seen = now
        return activity

    @staticmethod
    def _expire(activity: _Activity, now: float) -> None:
        while activity.points and activity.points[0][0] <= now - WINDOW_SECONDS:
            activity.total -= activity.points.popleft()[1]

    def _population(self, now: float) -> int:
        """The 95th percentile of per-user points in the last minute, refreshed every 5 s."""
        if now - self._p95_at >= POPULATION_EVERY_SECONDS:
            self._p95_at = now
            totals = []
            for activity in self._users.values():
                self._expire(activity, now)
                if activity.total:
                    totals.append(activity.total)
            totals.sort()
            self._p95 = totals[int(0.95 * (len(totals) - 1))] if totals else 0
        return self._p95

    def _forget_idle(self, now: float) -> None:
        idle = [u for u, a in self._users.items() if a.seen <= now - WINDOW_SECONDS]
        for user_id in idle or list(self._users)[: len(self._users) // 10]:
            del self._users[user_id]
