"""The window model (engine/quota.py): what is known of a subscription window, and what is predicted from it.

Pure functions on values: every row gives a window and the moment, and checks what the model says. The real CLI's
reports are read from the captures in tests/fixtures/claude-code (parsed by the CLI backend's own parser).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends.claude_cli import StreamState, parse_event, result_from_stream
from engine.quota import (
    HOUR_S,
    Headroom,
    JobSize,
    QuotaWindow,
    WindowReport,
    WindowStatus,
    add_usage,
    capacity_tokens,
    clamp_resets_at,
    describe,
    fits,
    fresh,
    headroom,
    observe,
    projected_share,
    roll,
    share_used,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude-code"
NOW = 1_795_620_000.0  # Wed 2026-11-25 15:20 UTC, before the captures' reset times
RESET = NOW + 2 * HOUR_S
S = WindowStatus


def window(*, status: S = S.ALLOWED, utilization: float | None = None, used: int = 0, resets_at: float | None = RESET,
           exhaustions: list[int] | None = None, started_at: float | None = None,
           base: tuple[float, int] | None = None) -> QuotaWindow:
    """``base``: the first share reported in the window and Switchboard's token count then."""
    start = started_at if started_at is not None else (resets_at - 5 * HOUR_S if resets_at else None)
    return QuotaWindow(plan="claude_cli:anthropic", kind="five_hour", status=status, resets_at=resets_at,
                       utilization=utilization, started_at=start, used_tokens=used, exhaustions=exhaustions or [],
                       base_share=base[0] if base else None, base_tokens=base[1] if base else 0)


GROWN = (0.1, 100_000)  # the share grew from 10% while Switchboard used 400k of the 500k below: 1M a window


def stream(name: str) -> StreamState:
    state = StreamState()
    for line in (FIXTURES / name).read_text().splitlines():
        event = parse_event(line)
        if event is not None:
            state.feed(event)
    return state


# ---- what the real CLI reports ------------------------------------------------------------------------------

def test_the_cli_reports_each_window_with_its_share_when_it_warns() -> None:
    result = result_from_stream(stream("oauth_allowed_warning.stream.jsonl"), now=NOW, subscription=True)
    assert result.ok
    by_kind = {r.kind: r for r in result.windows}
    assert by_kind["five_hour"] == WindowReport(kind="five_hour", status=S.WARNING, resets_at=1795820400,
                                                utilization=0.82)
    assert by_kind["seven_day"] == WindowReport(kind="seven_day", status=S.ALLOWED, resets_at=1796340000,
                                                utilization=0.31)


def test_a_window_left_out_of_unified_windows_is_still_the_one_the_event_names() -> None:
    line = ('{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","resetsAt":1795628715,'
            '"rateLimitType":"five_hour","utilization":0.82,"unifiedWindows":{"seven_day":{"utilization":0.31,'
            '"resetsAt":1796140800,"status":"allowed"}}}}')
    state = StreamState()
    event = parse_event(line)
    assert event is not None
    state.feed(event)
    assert {r.kind: r.status for r in state.windows.values()} == {"five_hour": S.WARNING, "seven_day": S.ALLOWED}


def test_the_cli_reports_the_rejected_window_of_a_usage_limit() -> None:
    result = result_from_stream(stream("oauth_usage_limit_429.stream.jsonl"), now=NOW, subscription=True)
    assert result.windows == [WindowReport(kind="five_hour", status=S.REJECTED, resets_at=1795628715)]


@pytest.mark.parametrize("name", ["success.stream.jsonl", "429_retries.stream.jsonl"])
def test_api_key_runs_report_no_window(name: str) -> None:
    assert result_from_stream(stream(name), now=NOW).windows == []


# ---- knowing the window ---------------------------------------------------------------------------------------

CLAMP_ROWS = [
    # raw, kind, expected value, clamped
    (None, "five_hour", None, False),
    (RESET, "five_hour", RESET, False),
    (RESET * 1000, "five_hour", RESET, False),  # milliseconds
    (NOW - 600, "five_hour", NOW, False),  # passed while the call ran
    (NOW - 7200, "five_hour", NOW, True),  # well in the past: a clock jump
    (NOW + 3 * 365 * 86_400, "five_hour", NOW + 5 * HOUR_S, True),  # years ahead
    (NOW + 3 * 86_400, "seven_day", NOW + 3 * 86_400, False),
    (NOW + 30 * 86_400, "something_new", NOW + 7 * 86_400, True),  # an unknown kind: the longest window
]


@pytest.mark.parametrize(("raw", "kind", "value", "clamped"), CLAMP_ROWS)
def test_clamp_resets_at(raw: float | None, kind: str, value: float | None, clamped: bool) -> None:
    result = clamp_resets_at(raw, kind, NOW)
    assert (result.value, result.clamped) == (value, clamped)


def test_a_report_dates_the_window_and_own_use_is_counted() -> None:
    w = observe(fresh("opus", "five_hour", NOW), WindowReport(kind="five_hour", status=S.ALLOWED, utilization=0.4),
                RESET, NOW)
    w = add_usage(add_usage(w, 30_000, NOW), 10_000, NOW + 60)
    assert (w.status, w.resets_at, w.started_at, w.used_tokens, w.runs) == (S.ALLOWED, RESET, RESET - 5 * HOUR_S,
                                                                             40_000, 2)
    assert (w.base_share, w.base_tokens) == (0.4, 0)
    later = observe(w, WindowReport(kind="five_hour", status=S.ALLOWED, utilization=0.48), RESET, NOW + 120)
    assert (later.base_share, capacity_tokens(later)) == (0.4, 500_000)  # 40k tokens moved the share 8 points


def test_running_out_records_how_much_switchboard_used_once_per_window() -> None:
    w = window(used=1_200_000, exhaustions=[900_000])
    rejected = WindowReport(kind="five_hour", status=S.REJECTED, resets_at=RESET)
    once = observe(w, rejected, RESET, NOW)
    twice = observe(add_usage(once, 5_000, NOW), rejected, RESET, NOW + 60)
    assert once.exhaustions == [900_000, 1_200_000]
    assert twice.exhaustions == once.exhaustions  # still the same exhausted window
    assert headroom(twice, NOW + 60, 0.9) is Headroom.EXHAUSTED


def test_a_later_reset_starts_a_new_window_and_keeps_what_was_learned() -> None:
    w = window(status=S.WARNING, utilization=0.9, used=800_000, exhaustions=[1_000_000])
    new = observe(w, WindowReport(kind="five_hour", status=S.ALLOWED, utilization=0.02), RESET + 5 * HOUR_S, NOW)
    assert (new.used_tokens, new.runs, new.utilization, new.exhaustions) == (0, 0, 0.02, [1_000_000])


def test_past_its_reset_a_window_starts_again() -> None:
    w = window(status=S.REJECTED, utilization=1.0, used=500, exhaustions=[500])
    assert roll(w, RESET - 1) is w
    after = roll(w, RESET + 1)
    assert (after.status, after.used_tokens, after.resets_at, after.exhaustions) == (S.UNKNOWN, 0, None, [500])


def test_a_window_nobody_reported_starts_at_switchboards_first_use() -> None:
    w = add_usage(fresh("codex", "five_hour", NOW), 1000, NOW)
    assert roll(w, NOW + 5 * HOUR_S - 1).used_tokens == 1000
    assert roll(w, NOW + 5 * HOUR_S).used_tokens == 0


# ---- the size of a window: reported, learned, or unknown (never invented) -------------------------------------

SIZE_ROWS = [
    # id, window, capacity, share used
    ("nothing known", window(used=50_000, utilization=None), None, None),
    ("scaled from the share's growth", window(used=500_000, utilization=0.5, base=GROWN), 1_000_000, 0.5),
    ("one report: work done elsewhere is not Switchboard's", window(used=200_000, utilization=0.4,
                                                                    base=(0.4, 200_000)), None, 0.4),
    ("too little growth to scale", window(used=201_000, utilization=0.42, base=(0.4, 200_000)), None, 0.42),
    ("learned: the smallest past exhaustion", window(used=300_000, exhaustions=[1_500_000, 1_200_000]), 1_200_000,
     0.25),
]


@pytest.mark.parametrize(("id_", "w", "capacity", "share"), SIZE_ROWS, ids=[r[0] for r in SIZE_ROWS])
def test_window_size(id_: str, w: QuotaWindow, capacity: int | None, share: float | None) -> None:
    assert capacity_tokens(w) == capacity
    assert share_used(w) == share


# ---- headroom and prediction ----------------------------------------------------------------------------------

HEADROOM_ROWS = [
    ("no window at all", None, Headroom.UNKNOWN),
    ("nothing reported, nothing learned", window(status=S.UNKNOWN, resets_at=None, started_at=NOW), Headroom.UNKNOWN),
    ("reported, plenty left, slow burn", window(utilization=0.3), Headroom.OK),
    ("the CLI warns", window(status=S.WARNING, utilization=0.5), Headroom.TIGHT),
    ("past warn_share", window(utilization=0.92), Headroom.TIGHT),
    # 60% in the first 3 hours: at that rate 100% comes before the reset two hours later.
    ("burn rate runs out before the reset", window(utilization=0.6), Headroom.TIGHT),
    ("learned share past warn_share", window(used=950_000, exhaustions=[1_000_000]), Headroom.TIGHT),
    ("rejected", window(status=S.REJECTED, utilization=1.0), Headroom.EXHAUSTED),
    ("rejected, but its reset has passed", window(status=S.REJECTED, resets_at=NOW - 1), Headroom.UNKNOWN),
]


@pytest.mark.parametrize(("id_", "w", "expected"), HEADROOM_ROWS, ids=[r[0] for r in HEADROOM_ROWS])
def test_headroom(id_: str, w: QuotaWindow | None, expected: Headroom) -> None:
    assert headroom(w, NOW, warn_share=0.9) is expected


def test_projected_share_at_the_current_burn_rate() -> None:
    assert projected_share(window(utilization=0.3), NOW) == pytest.approx(0.5)  # 0.3 in 3 h, 2 h to go
    assert projected_share(window(utilization=0.3, started_at=NOW - 60), NOW) is None  # too early to tell


FIT_ROWS = [
    ("no history of the type", window(utilization=0.5, used=500_000, base=GROWN), JobSize(), None),
    ("tokens: fits", window(utilization=0.5, used=500_000, base=GROWN), JobSize(tokens=300_000), True),
    ("tokens: would run out", window(utilization=0.5, used=500_000, base=GROWN), JobSize(tokens=480_000), False),
    ("duration: the burn leaves time", window(utilization=0.3), JobSize(duration_s=1800), True),
    ("duration: runs out first", window(utilization=0.85), JobSize(duration_s=2 * HOUR_S), False),
    ("nothing known of the window", window(status=S.UNKNOWN), JobSize(tokens=10, duration_s=10), None),
]


@pytest.mark.parametrize(("id_", "w", "size", "expected"), FIT_ROWS, ids=[r[0] for r in FIT_ROWS])
def test_fits(id_: str, w: QuotaWindow, size: JobSize, expected: bool | None) -> None:
    assert fits(w, size, NOW, headroom_share=0.05) is expected


def test_describe_says_what_is_known_and_marks_what_is_learned() -> None:
    assert describe(fresh("codex", "five_hour", NOW), NOW) == "five-hour: window unknown"
    reported = describe(window(status=S.WARNING, utilization=0.82, used=123_000).model_copy(
        update={"runs": 4, "moved": 2, "deferred": 1}), NOW)
    assert reported == ("five-hour: WARNING, 82% used, resets Wed 17:20 UTC, Switchboard used 123k tokens in 4 run(s), "
                        "2 moved, 1 deferred")
    learned = describe(window(status=S.UNKNOWN, used=300_000, exhaustions=[1_200_000, 1_500_000]), NOW)
    assert "~25% used (learned)" in learned
    assert "past windows ran out after 1.2M-1.5M of Switchboard's tokens" in learned
