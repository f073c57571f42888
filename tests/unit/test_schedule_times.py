"""Next-run arithmetic for schedules, the digest and quiet hours: UTC, a zone without DST, and a zone with it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.schedule_times import (
    due_slots,
    in_quiet_hours,
    latest_daily_at_or_before,
    next_daily_after,
    next_run_after,
    parse_every,
    parse_hhmm,
    zone,
)

UTC_Z = zone("UTC")
KOLKATA = zone("Asia/Kolkata")  # +05:30 all year, no DST
BERLIN = zone("Europe/Berlin")  # CET/CEST


def ts(text: str) -> float:
    """'2026-01-01 07:00' (UTC) -> epoch seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("2h", 7200), ("1d", 86_400), ("90s", 90), ("45 min", 2700), ("1.5h", 5400)]
)
def test_parse_every(text: str, seconds: float) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "m30", "10s", "every day", "-5m"])
def test_parse_every_refuses_nonsense_and_busy_loops(text: str) -> None:
    with pytest.raises(ValueError):
        parse_every(text)


@pytest.mark.parametrize("text", ["24:00", "7", "07:60", "ab:cd", ""])
def test_parse_hhmm_refuses_bad_times(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hhmm(text)


def test_unknown_zone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        zone("Mars/Olympus_Mons")


def test_next_daily_in_utc_today_or_tomorrow() -> None:
    assert next_daily_after(ts("2026-01-01 06:59"), "07:00", UTC_Z) == ts("2026-01-01 07:00")
    # Strictly after: at 07:00 exactly the next one is tomorrow.
    assert next_daily_after(ts("2026-01-01 07:00"), "07:00", UTC_Z) == ts("2026-01-02 07:00")
    assert latest_daily_at_or_before(ts("2026-01-01 07:00"), "07:00", UTC_Z) == ts("2026-01-01 07:00")
    assert latest_daily_at_or_before(ts("2026-01-01 06:59"), "07:00", UTC_Z) == ts("2025-12-31 07:00")


def test_next_daily_in_a_zone_without_dst() -> None:
    # 07:00 in Kolkata is 01:30 UTC, every day of the year.
    assert next_daily_after(ts("2026-01-01 00:00"), "07:00", KOLKATA) == ts("2026-01-01 01:30")
    assert next_daily_after(ts("2026-07-01 02:00"), "07:00", KOLKATA) == ts("2026-07-02 01:30")


def test_daily_time_keeps_its_wall_clock_meaning_across_dst() -> None:
    # Berlin: 07:00 is 06:00 UTC in winter and 05:00 UTC in summer (clocks go forward 2026-03-29).
    assert next_daily_after(ts("2026-03-28 12:00"), "07:00", BERLIN) == ts("2026-03-29 05:00")
    assert next_daily_after(ts("2026-03-27 12:00"), "07:00", BERLIN) == ts("2026-03-28 06:00")
    # 02:30 does not exist on 2026-03-29 in Berlin: it runs once, an hour "late" by wall clock (01:30 UTC).
    assert next_daily_after(ts("2026-03-29 00:00"), "02:30", BERLIN) == ts("2026-03-29 01:30")
    # 02:30 happens twice on 2026-10-25: it runs once, at the first (00:30 UTC).
    assert next_daily_after(ts("2026-10-24 12:00"), "02:30", BERLIN) == ts("2026-10-25 00:30")
    assert next_daily_after(ts("2026-10-25 00:30"), "02:30", BERLIN) == ts("2026-10-26 01:30")


def test_next_run_after_for_a_new_schedule() -> None:
    now = ts("2026-01-01 10:10")
    assert next_run_after(now, interval_s=1800, daily_at=None, tz=UTC_Z) == now + 1800
    assert next_run_after(now, interval_s=None, daily_at="07:00", tz=UTC_Z) == ts("2026-01-02 07:00")
    with pytest.raises(ValueError):
        next_run_after(now, interval_s=None, daily_at=None, tz=UTC_Z)


def test_due_slots_interval_on_time_late_and_not_yet() -> None:
    start = ts("2026-01-01 10:00")
    assert due_slots(start, start - 1, interval_s=1800, daily_at=None, tz=UTC_Z).count == 0
    on_time = due_slots(start, start + 5, interval_s=1800, daily_at=None, tz=UTC_Z)
    assert (on_time.count, on_time.latest, on_time.next_run_at) == (1, start, start + 1800)
    # Down from 10:00 to 13:10: slots 10:00 ... 13:00 came due; the grid is kept (next 13:30, not 13:40).
    late = due_slots(start, ts("2026-01-01 13:10"), interval_s=1800, daily_at=None, tz=UTC_Z)
    assert (late.count, late.latest, late.next_run_at) == (7, ts("2026-01-01 13:00"), ts("2026-01-01 13:30"))


def test_due_slots_daily_after_three_days_down() -> None:
    due = due_slots(ts("2026-01-01 07:00"), ts("2026-01-03 09:00"), interval_s=None, daily_at="07:00", tz=UTC_Z)
    assert (due.count, due.latest, due.next_run_at) == (3, ts("2026-01-03 07:00"), ts("2026-01-04 07:00"))
    on_time = due_slots(ts("2026-01-01 07:00"), ts("2026-01-01 07:00"), interval_s=None, daily_at="07:00", tz=UTC_Z)
    assert (on_time.count, on_time.next_run_at) == (1, ts("2026-01-02 07:00"))


def test_due_slots_daily_across_dst_counts_days_not_hours() -> None:
    due = due_slots(ts("2026-03-28 06:00"), ts("2026-03-29 05:00"), interval_s=None, daily_at="07:00", tz=BERLIN)
    assert (due.count, due.latest, due.next_run_at) == (2, ts("2026-03-29 05:00"), ts("2026-03-30 05:00"))


def test_quiet_hours_wrapping_midnight() -> None:
    spec = "22:00-07:00"
    assert not in_quiet_hours(spec, ts("2026-01-01 21:59"), UTC_Z)
    assert in_quiet_hours(spec, ts("2026-01-01 22:00"), UTC_Z)
    assert in_quiet_hours(spec, ts("2026-01-02 03:00"), UTC_Z)
    assert in_quiet_hours(spec, ts("2026-01-02 06:59"), UTC_Z)
    assert not in_quiet_hours(spec, ts("2026-01-02 07:00"), UTC_Z)


def test_quiet_hours_same_day_window_and_local_time() -> None:
    assert in_quiet_hours("12:00-14:00", ts("2026-01-01 13:00"), UTC_Z)
    assert not in_quiet_hours("12:00-14:00", ts("2026-01-01 14:00"), UTC_Z)
    # 22:00 in Kolkata is 16:30 UTC.
    assert in_quiet_hours("22:00-07:00", ts("2026-01-01 16:30"), KOLKATA)
    assert not in_quiet_hours("22:00-07:00", ts("2026-01-01 16:29"), KOLKATA)
    assert not in_quiet_hours(None, ts("2026-01-01 03:00"), UTC_Z)
    assert not in_quiet_hours("07:00-07:00", ts("2026-01-01 07:00"), UTC_Z)


@pytest.mark.parametrize("text", ["367d", "99999999999999999999999d", "9" * 400 + "d", "8785h"])
def test_an_interval_over_a_year_is_refused_when_it_is_read(text: str) -> None:
    with pytest.raises(ValueError, match="too long: at most 366 days"):
        parse_every(text)
    assert parse_every("366d") == 366 * 86_400
