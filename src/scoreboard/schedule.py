"""When a board resets: ``hour`` (on the hour), ``day``, ``week`` (Monday) or ``month``
(the 1st), at 00:00 in the board's IANA timezone, daylight-saving changes included.

Times are found in the zone's wall clock and turned into instants with ``zoneinfo``:
a day may last 23 or 25 hours, and a wall-clock time that does not exist (a zone that
skips its midnight) is taken as the instant the clock jumps past it.
"""

from __future__ import annotations

import datetime
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from scoreboard.model import Reset

UTC = datetime.UTC


@cache
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` for one that does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}") from exc


@cache
def timezones() -> frozenset[str]:
    """The IANA zones a board may name: those of the system's (or tzdata's) database."""
    return frozenset(available_timezones())


def is_timezone(name: object) -> bool:
    return isinstance(name, str) and name in timezones()


def _ms(moment: datetime.datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)


def _wall(at_ms: int, tz: ZoneInfo) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(at_ms / 1000, tz).replace(tzinfo=None)


def _instant(wall: datetime.datetime, tz: ZoneInfo) -> int:
    """Milliseconds of a wall-clock time in ``tz``: the earlier one when it repeats, and
    when a jump skips it, the instant of the jump (when the clock passed it)."""
    after = _ms(wall.replace(tzinfo=tz, fold=0))  # a skipped time: read with the old offset
    if _wall(after, tz) == wall:
        return after
    before = _ms(wall.replace(tzinfo=tz, fold=1))  # ...and with the new one: before the jump
    while after - before > 1:  # the first millisecond whose wall clock is at or past it
        middle = (before + after) // 2
        if _wall(middle, tz) >= wall:
            after = middle
        else:
            before = middle
    return after


_QUARTER = 15 * 60 * 1000  # every zone's offset is a whole number of quarter hours


def _on_the_hour(at_ms: int, tz: ZoneInfo) -> bool:
    return datetime.datetime.fromtimestamp(at_ms / 1000, tz).minute == 0


def period_start(reset: Reset, timezone: str, at_ms: int) -> int | None:
    """The start of the period holding ``at_ms``: the last reset at or before it (None
    for ``never``)."""
    if reset == "never":
        return None
    tz = zone(timezone)
    if reset == "hour":
        t = at_ms - at_ms % _QUARTER
        while not _on_the_hour(t, tz):
            t -= _QUARTER
        return t
    wall = datetime.datetime.fromtimestamp(at_ms / 1000, tz).replace(tzinfo=None)
    start = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    if reset == "week":
        start -= datetime.timedelta(days=start.weekday())
    elif reset == "month":
        start = start.replace(day=1)
    return _instant(start, tz)


def next_reset(reset: Reset, timezone: str, after_ms: int) -> int | None:
    """The first reset strictly after ``after_ms`` (None for ``never``)."""
    if reset == "never":
        return None
    tz = zone(timezone)
    if reset == "hour":  # in UTC steps: a repeated wall-clock hour resets twice
        t = after_ms - after_ms % _QUARTER + _QUARTER
        while not _on_the_hour(t, tz):
            t += _QUARTER
        return t
    wall = datetime.datetime.fromtimestamp(after_ms / 1000, tz).replace(tzinfo=None)
    day = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    while True:
        if reset == "day":
            day += datetime.timedelta(days=1)
        elif reset == "week":
            day += datetime.timedelta(days=7 - day.weekday())
        else:
            day = (day.replace(day=1) + datetime.timedelta(days=32)).replace(day=1)
        found = _instant(day, tz)
        if found > after_ms:
            return found
