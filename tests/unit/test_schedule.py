"""When boards reset: every schedule, in the board's zone, daylight-saving changes,
month ends and midnights a zone skips included. Times are pinned instants (an injected
clock), checked against the wall clock worked out by hand."""

from __future__ import annotations

import datetime

import pytest

from scoreboard.schedule import next_reset, period_start


def ms(text: str) -> int:
    """An RFC 3339 instant as Unix milliseconds."""
    return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)


def iso(at_ms: int | None) -> str:
    assert at_ms is not None
    moment = datetime.datetime.fromtimestamp(at_ms / 1000, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def resets(reset: str, zone: str, start: str, count: int) -> list[str]:
    """The next ``count`` resets after ``start``, each found from the one before."""
    found, at = [], ms(start)
    for _ in range(count):
        following = next_reset(reset, zone, at)  # type: ignore[arg-type]
        found.append(iso(following))
        at = ms(found[-1])
    return found


def test_never_resets() -> None:
    assert next_reset("never", "UTC", ms("2026-12-03T10:00:00+00:00")) is None
    assert period_start("never", "UTC", ms("2026-12-03T10:00:00+00:00")) is None


def test_the_next_reset_is_strictly_after_the_instant() -> None:
    midnight = ms("2026-12-04T00:00:00+00:00")
    assert next_reset("day", "UTC", midnight - 1) == midnight
    assert next_reset("day", "UTC", midnight) == midnight + 86_400_000
    assert period_start("day", "UTC", midnight) == midnight
    assert period_start("day", "UTC", midnight - 1) == midnight - 86_400_000


@pytest.mark.parametrize(("zone", "start", "expected"), [
    # Spring forward in Berlin (02:00 CET -> 03:00 CEST on 29 March): a 23-hour day.
    ("Europe/Berlin", "2026-03-28T12:00:00+01:00",
     ["2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", "2026-03-30T22:00:00Z"]),
    # Fall back (03:00 CEST -> 02:00 CET on 25 October): a 25-hour day.
    ("Europe/Berlin", "2026-10-24T12:00:00+02:00",
     ["2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", "2026-10-26T23:00:00Z"]),
    # New York springs forward on 8 March (EST -> EDT) and falls back on 1 November.
    ("America/New_York", "2026-03-07T12:00:00-05:00",
     ["2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"]),
    ("America/New_York", "2026-10-31T12:00:00-04:00",
     ["2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"]),
    # Santiago skips its midnight (Saturday 24:00 -04 is Sunday 01:00 -03, 6 September):
    # the reset is the jump itself, not an hour before it.
    ("America/Santiago", "2026-09-05T12:00:00-04:00",
     ["2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z"]),
])
def test_daily_resets_at_local_midnight_through_daylight_saving(
        zone: str, start: str, expected: list[str]) -> None:
    assert resets("day", zone, start, len(expected)) == expected


def test_a_day_lasts_23_or_25_hours_at_the_changes() -> None:
    spring = resets("day", "Europe/Berlin", "2026-03-28T12:00:00+01:00", 2)
    fall = resets("day", "Europe/Berlin", "2026-10-24T12:00:00+02:00", 2)
    assert ms(spring[1]) - ms(spring[0]) == 23 * 3_600_000
    assert ms(fall[1]) - ms(fall[0]) == 25 * 3_600_000


def test_hourly_resets_on_the_local_hour() -> None:
    # Berlin skips 02:00-03:00 on 29 March: 01:00 CET is 00:00Z, 03:00 CEST is 01:00Z.
    assert resets("hour", "Europe/Berlin", "2026-03-29T00:30:00+01:00", 3) == [
        "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"]
    # On 25 October the hour 02:00 comes twice: each is a reset of its own.
    assert resets("hour", "Europe/Berlin", "2026-10-25T01:30:00+02:00", 3) == [
        "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"]
    # Kolkata is UTC+05:30: its hours begin at half past in UTC.
    assert resets("hour", "Asia/Kolkata", "2026-12-03T10:10:00+05:30", 2) == [
        "2026-12-03T05:30:00Z", "2026-12-03T06:30:00Z"]


def test_weekly_resets_on_monday_midnight() -> None:
    # Sunday 29 March 2026, Berlin: the next Monday begins in summer time.
    assert resets("week", "Europe/Berlin", "2026-03-29T12:00:00+02:00", 2) == [
        "2026-03-29T22:00:00Z", "2026-04-05T22:00:00Z"]
    # From a Monday just after midnight: the following Monday.
    assert resets("week", "America/New_York", "2026-11-02T00:00:01-05:00", 1) == [
        "2026-11-09T05:00:00Z"]
    assert iso(period_start("week", "UTC", ms("2026-12-03T10:00:00+00:00"))) \
        == "2026-11-30T00:00:00Z"


def test_monthly_resets_on_the_first_at_midnight() -> None:
    # Month ends of every length, and the year's end.
    assert resets("month", "UTC", "2026-01-31T23:59:59+00:00", 3) == [
        "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"]
    assert resets("month", "UTC", "2026-12-15T00:00:00+00:00", 1) == ["2027-01-01T00:00:00Z"]
    assert resets("month", "UTC", "2028-02-15T00:00:00+00:00", 1) == ["2028-03-01T00:00:00Z"]
    # 1 November in New York is the day it falls back: midnight is still EDT (-04).
    assert resets("month", "America/New_York", "2026-10-15T00:00:00-04:00", 2) == [
        "2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z"]
    assert iso(period_start("month", "Europe/Berlin", ms("2026-04-15T00:00:00+02:00"))) \
        == "2026-03-31T22:00:00Z"
