"""Operator-facing lines: a schedule's line names its cadence and when it runs next."""

from __future__ import annotations

from bot.render import schedule_line
from engine.models import Schedule


def test_a_schedule_line_names_cadence_type_and_next_run() -> None:
    # 2026-01-02 03:04:05 UTC; the line used to call its own cadence string as the time formatter.
    every = Schedule(id=1, name="digest", job_type="research", prompt="read the feeds", interval_s=7200,
                     next_run_at=1767323045.0, created_at=0.0)
    assert schedule_line(every) == (
        "digest           every 2h     research   next 2026-01-02 03:04:05  read the feeds"
    )
    daily = every.model_copy(update={"interval_s": None, "daily_at": "07:00", "catch_up": False, "project": "site"})
    assert schedule_line(daily) == (
        "digest           daily 07:00  research   next 2026-01-02 03:04:05 (no catch-up) [site]  read the feeds"
    )
