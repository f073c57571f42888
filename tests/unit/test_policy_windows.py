"""Quota-aware routing as tables (engine/policy.py): which jobs keep a subscription window, which move to another
backend, which wait for the window's reset. Pure rules: the rows need no store, clock or backend."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from engine.models import Job, JobState, Priority, Source
from engine.policy import (
    RunDecision,
    RunKind,
    RunOutcome,
    WindowFacts,
    WindowUse,
    after_chain,
    hm,
    route_with_windows,
    window_use,
)
from engine.quota import HOUR_S, Headroom, JobSize, QuotaWindow, WindowStatus
from engine.routing import RoutePlan, SkipReason
from engine.settings import BackendConfig, QuotaSettings

H, U = Headroom, WindowUse
NOW = 1_795_620_000.0
RESET = NOW + 2 * HOUR_S

# headroom, urgent, fits, fallback -> use
USE_ROWS: list[tuple[Headroom, bool, bool | None, bool, WindowUse]] = [
    (H.OK, False, None, False, U.USE),
    (H.OK, False, True, True, U.USE),
    (H.UNKNOWN, False, None, True, U.USE),
    (H.OK, False, False, True, U.MOVE),  # a long job is not started on a window it will not last ...
    (H.OK, False, False, False, U.DEFER),  # ... and waits for the reset when nothing else can take it
    (H.OK, True, False, True, U.MOVE),
    (H.OK, True, False, False, U.USE),  # the operator's work is never held back by a guess
    (H.TIGHT, True, None, True, U.USE),  # operator and high-priority work keeps the subscription
    (H.TIGHT, True, True, False, U.USE),
    (H.TIGHT, True, False, True, U.MOVE),
    (H.TIGHT, True, False, False, U.USE),
    (H.TIGHT, False, None, True, U.MOVE),  # background work goes elsewhere ...
    (H.TIGHT, False, True, True, U.MOVE),
    (H.TIGHT, False, None, False, U.DEFER),  # ... or waits for the reset
    (H.TIGHT, False, False, False, U.DEFER),
    (H.EXHAUSTED, True, None, False, U.USE),  # paused until its reset: routing already passed it over
]


@pytest.mark.parametrize(("room", "urgent", "fits", "fallback", "expected"), USE_ROWS)
def test_window_use(room: Headroom, urgent: bool, fits: bool | None, fallback: bool, expected: WindowUse) -> None:
    assert window_use(WindowFacts(room, urgent, fits, fallback)) is expected


def test_every_use_and_headroom_has_a_row() -> None:
    assert {row[-1] for row in USE_ROWS} == set(WindowUse)
    assert {row[0] for row in USE_ROWS} == set(Headroom)


# ---- a whole plan ---------------------------------------------------------------------------------------------

def config(name: str, *, subscription: bool = False, paid: bool = False) -> BackendConfig:
    return BackendConfig(name=name, kind="claude_cli" if subscription else "openai", family=name, tier=2,
                         subscription=subscription, price_in_per_mtok=1.0 if paid else 0.0)


SUB, SUB2, PAID = config("max", subscription=True), config("plus", subscription=True), config("paid", paid=True)


def win(backend: str, *, status: WindowStatus = WindowStatus.ALLOWED, utilization: float | None = 0.2,
        used: int = 100_000, kind: str = "five_hour", resets_at: float = RESET) -> QuotaWindow:
    """Switchboard's count rose by 100k tokens while the share rose 10 points: a window holds about 1M."""
    return QuotaWindow(plan=backend, kind=kind, status=status, utilization=utilization, resets_at=resets_at,
                       started_at=resets_at - 5 * HOUR_S, used_tokens=used, base_share=(utilization or 0.1) - 0.1,
                       base_tokens=used - 100_000)


WARNING = win("max", status=WindowStatus.WARNING, utilization=0.8, used=400_000)


def job(priority: Priority = Priority.NORMAL, deadline: float | None = None, job_type: str = "coding") -> Job:
    return Job(id=1, type=job_type, title="t", prompt="p", source=Source.OPERATOR, priority=priority,
               state=JobState.RUNNING, tier=2, run_after=NOW, max_attempts=3, max_revisions=2, deadline=deadline,
               created_at=NOW, updated_at=NOW)


@dataclass
class PlanRow:
    id: str
    candidates: list[BackendConfig]
    windows: list[QuotaWindow]
    kept: list[str]
    waits: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, SkipReason] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    size: JobSize = field(default_factory=JobSize)
    deadline: float | None = None
    enabled: bool = True
    job_type: str = "coding"


PLAN_ROWS = [
    PlanRow("no window known: as before", [SUB, PAID], [], ["max", "paid"]),
    PlanRow("plenty left: the subscription first", [SUB, PAID], [win("max")], ["max", "paid"]),
    PlanRow("warning, background job: moves to the paid fallback", [SUB, PAID], [WARNING], ["paid"],
            skipped={"max": SkipReason.WINDOW_KEPT}),
    PlanRow("warning, operator job: keeps the subscription", [SUB, PAID], [WARNING], ["max", "paid"],
            priority=Priority.OPERATOR),
    PlanRow("warning, high priority: keeps it", [SUB, PAID], [WARNING], ["max", "paid"], priority=Priority.HIGH),
    PlanRow("warning, the review of background work (queued high): moves", [SUB, PAID], [WARNING], ["paid"],
            skipped={"max": SkipReason.WINDOW_KEPT}, priority=Priority.HIGH, job_type="review"),
    PlanRow("warning, the review of the operator's job: keeps it", [SUB, PAID], [WARNING], ["max", "paid"],
            priority=Priority.OPERATOR, job_type="review"),
    PlanRow("warning, a deadline before the reset: keeps it", [SUB, PAID], [WARNING], ["max", "paid"],
            deadline=RESET - 60),
    PlanRow("warning, no fallback, low priority: waits for the reset", [SUB], [WARNING], [],
            waits={"max": RESET}, skipped={"max": SkipReason.WINDOW_KEPT}, priority=Priority.LOW),
    PlanRow("warning: moves to another subscription with room", [SUB, SUB2], [WARNING, win("plus")], ["plus"],
            skipped={"max": SkipReason.WINDOW_KEPT}),
    PlanRow("both subscriptions tight: both wait", [SUB, SUB2],
            [WARNING, win("plus", status=WindowStatus.WARNING, resets_at=RESET + HOUR_S)], [],
            waits={"max": RESET, "plus": RESET + HOUR_S},
            skipped={"max": SkipReason.WINDOW_KEPT, "plus": SkipReason.WINDOW_KEPT}),
    PlanRow("a long job the window will not last: moves", [SUB, PAID], [win("max", utilization=0.5, used=500_000)],
            ["paid"], skipped={"max": SkipReason.WINDOW_TOO_SHORT}, size=JobSize(tokens=480_000)),
    PlanRow("a long job, no fallback: waits", [SUB], [win("max", utilization=0.5, used=500_000)], [],
            waits={"max": RESET}, skipped={"max": SkipReason.WINDOW_TOO_SHORT}, size=JobSize(tokens=480_000)),
    PlanRow("a long operator job, no fallback: tries", [SUB], [win("max", utilization=0.5, used=500_000)], ["max"],
            size=JobSize(tokens=480_000), priority=Priority.OPERATOR),
    PlanRow("the weekly window limits", [SUB, PAID],
            [win("max"), win("max", kind="seven_day", status=WindowStatus.WARNING, resets_at=NOW + 3 * 86_400)],
            ["paid"], skipped={"max": SkipReason.WINDOW_KEPT}),
    PlanRow("quota-aware routing off: as before", [SUB, PAID], [WARNING], ["max", "paid"], enabled=False),
]


def test_calls_in_flight_count_against_what_is_left() -> None:
    # 50% of a 1M window used; a typical run is 200k: one fits, but not with two more already running.
    window, size = win("max", utilization=0.5, used=500_000), JobSize(tokens=200_000)
    alone = route_with_windows(RoutePlan(chain=["max", "paid"], states={}, candidates=[SUB, PAID]),
                               {"max": [window]}, job(), size, QuotaSettings(), NOW, running={"max": 0})
    busy = route_with_windows(RoutePlan(chain=["max", "paid"], states={}, candidates=[SUB, PAID]),
                              {"max": [window]}, job(), size, QuotaSettings(), NOW, running={"max": 2})
    assert [c.name for c in alone.candidates] == ["max", "paid"]
    assert [c.name for c in busy.candidates] == ["paid"]
    assert busy.skipped["max"].reason is SkipReason.WINDOW_TOO_SHORT


@pytest.mark.parametrize("row", PLAN_ROWS, ids=[r.id for r in PLAN_ROWS])
def test_route_with_windows(row: PlanRow) -> None:
    plan = RoutePlan(chain=[c.name for c in row.candidates], states={}, candidates=list(row.candidates))
    windows: dict[str, list[QuotaWindow]] = {}
    for w in row.windows:
        windows.setdefault(w.plan, []).append(w)  # keyed by backend, as the tracker hands them over
    quota = QuotaSettings(enabled=row.enabled)
    out = route_with_windows(plan, windows, job(row.priority, row.deadline, row.job_type), row.size, quota, NOW)
    assert [c.name for c in out.candidates] == row.kept
    assert out.window_waits == row.waits
    assert {n: s.reason for n, s in out.skipped.items()} == row.skipped


def test_a_skip_for_a_window_is_in_the_jobs_routing_history() -> None:
    plan = RoutePlan(chain=["max", "paid"], states={}, candidates=[SUB, PAID])
    out = route_with_windows(plan, {"max": [WARNING]}, job(), JobSize(), QuotaSettings(), NOW)
    assert out.noteworthy_skips() == {
        "max": f"its usage window is kept for operator work (five_hour allowed_warning, resets {hm(RESET)})"
    }


def test_a_deferred_job_snoozes_until_the_reset_without_an_attempt() -> None:
    plan = RoutePlan(chain=["max"], states={}, candidates=[SUB])
    plan = route_with_windows(plan, {"max": [WARNING]}, job(Priority.LOW), JobSize(), QuotaSettings(), NOW)
    decision = after_chain(RunOutcome(None), plan, job(Priority.LOW), NOW, jitter=0.5)
    assert decision == RunDecision(
        RunKind.SNOOZE, f"deferred for the usage window of max; resumes at {hm(RESET)} (no attempt used)", at=RESET
    )
