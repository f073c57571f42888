"""Rate-limit signals to an absolute resume time: each header form, the CLI's forms, latest wins."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from engine.ratelimit import (
    latest,
    parse_duration_s,
    parse_reset_value,
    parse_resets_at,
    parse_resets_text,
    parse_retry_after,
    parse_retry_after_ms,
    parse_rfc3339,
    resume_at_from_headers,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp()  # a Thursday, noon UTC


def at(hour: int, minute: int = 0, day: int = 1, month: int = 1, year: int = 2026) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("value", "expected"), [
    ("1500", NOW + 1.5), ("0", NOW), (" 250 ", NOW + 0.25), ("-5", None), ("soon", None), (None, None),
])
def test_retry_after_ms(value, expected):
    assert parse_retry_after_ms(value, NOW) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("120", NOW + 120), ("1.5", NOW + 1.5), ("0", NOW),
    ("Thu, 01 Jan 2026 12:05:00 GMT", NOW + 300),
    ("Thu, 01 Jan 2026 11:00:00 GMT", NOW),  # a date in the past means "now", never earlier
    ("", None), ("tomorrow", None), ("-3", None), (None, None),
])
def test_retry_after(value, expected):
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(("value", "seconds"), [
    ("6m0s", 360), ("1.5s", 1.5), ("20ms", 0.02), ("1h2m3s", 3723), ("45", 45), ("2d", 172800),
    ("500us", 0.0005), ("", None), ("6x", None), ("m5", None), ("1s garbage", None), (None, None),
])
def test_duration(value, seconds):
    result = parse_duration_s(value)
    assert result == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(("value", "expected"), [
    ("6m0s", NOW + 360),
    (str(int(NOW + 90) * 1000), NOW + 90),  # OpenRouter: epoch milliseconds
    (str(int(NOW + 90)), NOW + 90),  # epoch seconds
    ("nonsense", None),
])
def test_reset_value(value, expected):
    result = parse_reset_value(value, NOW)
    assert result == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-01-01T12:05:00Z", NOW + 300), ("2026-01-01T13:05:00+01:00", NOW + 300),
    ("2026-01-01T12:00:30.500Z", NOW + 30.5), ("2026-01-01T12:05:00", NOW + 300), ("yesterday", None),
])
def test_rfc3339(value, expected):
    assert parse_rfc3339(value, NOW) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (NOW + 600, NOW + 600), (int(NOW + 600), NOW + 600), ((NOW + 600) * 1000, NOW + 600),
    (str(int(NOW + 60)), NOW + 60), (None, None), ("x", None), (0, None), (True, None),
])
def test_resets_at(value, expected):
    assert parse_resets_at(value, NOW) == expected


def test_absurd_future_is_ignored():
    assert parse_retry_after(str(10 * 365 * 86400), NOW) is None
    assert parse_resets_at(NOW + 10 * 365 * 86400, NOW) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("You've hit your 5-hour limit · resets 5:45pm (UTC)", at(17, 45)),
    ("resets 5pm", at(17)),
    ("resets 9am", at(9, day=2)),  # already past today: tomorrow
    ("resets 12am", at(0, day=2)),
    ("resets 12pm", at(12, day=2)),  # exactly now is not in the future
    ("resets 17:30", at(17, 30)),
    ("resets 5pm (Europe/Paris)", at(16)),  # 17:00 in Paris is 16:00 UTC in winter
    ("resets 5:45pm (America/New_York)", at(22, 45)),
    ("Weekly limit reached · resets Jan 5, 9am (UTC)", at(9, day=5)),
    ("resets Jan 1 at 8am", at(8, year=2027)),  # that date has passed this year
    ("resets 5pm (Not/AZone)", at(17)),  # unknown zone: read as UTC
    ("resets 13pm", None), ("resets 5", None), ("no reset mentioned", None), ("", None), (None, None),
])
def test_resets_text(text, expected):
    assert parse_resets_text(text, NOW) == expected


def test_resets_text_default_zone():
    assert parse_resets_text("resets 5pm", NOW, default_tz="Europe/Paris") == at(16)


def test_latest():
    assert latest([None, 3.0, 1.0, None]) == 3.0
    assert latest([None]) is None
    assert latest([]) is None


def test_headers_latest_wins_and_names_are_case_insensitive():
    headers = httpx.Headers({
        "Retry-After": "20",
        "retry-after-ms": "1500",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-reset-tokens": "1.5s",
        "anthropic-ratelimit-tokens-reset": "2026-01-01T12:03:00Z",
    })
    assert resume_at_from_headers(headers, NOW) == NOW + 360


def test_headers_anthropic_reset_is_the_latest():
    headers = {"retry-after": "10", "anthropic-ratelimit-requests-reset": "2026-01-01T12:00:30Z",
               "anthropic-ratelimit-input-tokens-reset": "2026-01-01T12:10:00Z",
               "anthropic-ratelimit-unified-reset": str(int(NOW + 120))}
    assert resume_at_from_headers(headers, NOW) == NOW + 600


def test_headers_absent_or_garbage():
    assert resume_at_from_headers({}, NOW) is None
    assert resume_at_from_headers({"retry-after": "later", "x-ratelimit-reset-tokens": "??",
                                   "content-type": "application/json"}, NOW) is None
