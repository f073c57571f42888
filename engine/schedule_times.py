"""Pure time arithmetic for schedules, the digest and quiet hours. No I/O, no clock: every function takes ``now``.

Times are epoch seconds (UTC). Wall-clock times ("07:00", "22:00-07:00") are read in an IANA time zone through
``zoneinfo``. Across a daylight-saving change a daily time keeps its wall-clock meaning: 07:00 stays 07:00 local.
A wall time that does not exist on the day clocks spring forward (02:30 in Europe/Berlin on the last Sunday of
March) runs at the same instant as the hour after it; one that happens twice when they fall back runs once, at
the first.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "MAX_DURATION_S",
    "MIN_INTERVAL_S",
    "DueSlots",
    "check_duration",
    "daily_occurrence",
    "due_slots",
    "in_quiet_hours",
    "latest_daily_at_or_before",
    "local_date",
    "next_daily_after",
    "next_run_after",
    "parse_every",
    "parse_hhmm",
    "zone",
]

MIN_INTERVAL_S = 60.0
MAX_DURATION_S = 366 * 86_400.0  # a year: longer is a typo (and 10**20 days is past any date a clock can show)
_EVERY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day)s?\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86_400, "day": 86_400}
_HHMM_RE = re.compile(r"^(\d{1,2}):(\d{2})$")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from exc


def parse_every(text: str) -> float:
    """'30m' -> 1800.0. Units s, m, h, d. At least a minute: a schedule is not a busy loop."""
    match = _EVERY_RE.match(text)
    if not match:
        raise ValueError(f"not an interval: {text!r} (examples: 30m, 2h, 1d)")
    seconds = check_duration(float(match.group(1)) * _UNIT_S[match.group(2).lower()], text)
    if seconds < MIN_INTERVAL_S:
        raise ValueError(f"interval {text!r} is too short (at least 1m)")
    return seconds


def check_duration(seconds: float, text: str) -> float:
    """``seconds`` (read from ``text``) if it is at most ``MAX_DURATION_S``; a clear ValueError otherwise."""
    if not seconds <= MAX_DURATION_S:  # also refuses inf (a 400-digit number) and nan
        shown = text if len(text) <= 24 else f"{text[:20]}…"
        raise ValueError(f"{shown!r} is too long: at most 366 days (366d)")
    return seconds


def parse_hhmm(text: str) -> time:
    match = _HHMM_RE.match(text.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f"not a time of day: {text!r} (HH:MM, 24-hour, e.g. 07:00)")
    return time(int(match.group(1)), int(match.group(2)))


def local_date(ts: float, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(ts, tz).date()


def daily_occurrence(day: date, at: time, tz: ZoneInfo) -> float:
    """The instant of wall-clock ``at`` on ``day`` in ``tz`` (fold 0: the first of two, the shifted gap)."""
    return datetime.combine(day, at, tzinfo=tz).timestamp()


def next_daily_after(after: float, at: str | time, tz: ZoneInfo) -> float:
    """The first occurrence of the daily wall-clock time strictly after ``after``."""
    wall = parse_hhmm(at) if isinstance(at, str) else at
    day = local_date(after, tz) - timedelta(days=1)
    for _ in range(4):
        candidate = daily_occurrence(day, wall, tz)
        if candidate > after:
            return candidate
        day += timedelta(days=1)
    raise AssertionError("unreachable: a daily time occurs within three days")


def latest_daily_at_or_before(now: float, at: str | time, tz: ZoneInfo) -> float:
    """The most recent occurrence of the daily wall-clock time at or before ``now``."""
    wall = parse_hhmm(at) if isinstance(at, str) else at
    day = local_date(now, tz) + timedelta(days=1)
    for _ in range(4):
        candidate = daily_occurrence(day, wall, tz)
        if candidate <= now:
            return candidate
        day -= timedelta(days=1)
    raise AssertionError("unreachable: a daily time occurs within three days")


def next_run_after(after: float, *, interval_s: float | None, daily_at: str | None, tz: ZoneInfo) -> float:
    """When a new schedule first runs: one interval from now, or the next daily time."""
    if interval_s is not None:
        return after + interval_s
    if daily_at is not None:
        return next_daily_after(after, daily_at, tz)
    raise ValueError("a schedule needs an interval or a daily time")


@dataclass(frozen=True)
class DueSlots:
    """The slots of a schedule that came due by ``now``: ``count`` of them, the latest at ``latest``."""

    count: int
    latest: float
    next_run_at: float


def due_slots(
    next_run_at: float, now: float, *, interval_s: float | None, daily_at: str | None, tz: ZoneInfo
) -> DueSlots:
    """Every slot from ``next_run_at`` up to ``now`` (count 0 when none is due yet), and the first slot after.

    Interval slots stay on their grid (``next_run_at + k * interval``), so a late tick never drifts them.
    """
    if next_run_at > now:
        return DueSlots(0, next_run_at, next_run_at)
    if interval_s is not None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        count = math.floor((now - next_run_at) / interval_s) + 1
        latest = next_run_at + (count - 1) * interval_s
        return DueSlots(count, latest, next_run_at + count * interval_s)
    if daily_at is None:
        raise ValueError("a schedule needs an interval or a daily time")
    wall = parse_hhmm(daily_at)
    latest = latest_daily_at_or_before(now, wall, tz)
    days = (local_date(latest, tz) - local_date(next_run_at, tz)).days
    count = max(1, days + 1)
    return DueSlots(count, latest, next_daily_after(now, wall, tz))


def in_quiet_hours(spec: str | None, now: float, tz: ZoneInfo) -> bool:
    """Whether ``now`` falls in the window ``"HH:MM-HH:MM"`` (local time; may wrap midnight; end excluded).

    The one test of ``[pulse] quiet_hours``: the Telegram sender and live activity hold non-urgent messages
    with it, and the digest counts what was held."""
    if not spec:
        return False
    start_text, _, end_text = spec.partition("-")
    start, end = parse_hhmm(start_text), parse_hhmm(end_text)
    local = datetime.fromtimestamp(now, tz).time()
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end
