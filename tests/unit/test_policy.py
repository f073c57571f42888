"""The routing-and-retry policy as tables: each row is the facts of an outcome and the decision expected.

Every failure class after one call (``after_attempt``), every failure class and every way a chain can end
(``after_chain``), the budget checks. The functions are pure, so the rows need no store, clock or backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from engine.failures import Failure, FailureClass
from engine.models import BackendState, Job, JobState, Priority, Source
from engine.policy import (
    PAUSING,
    RULES,
    BackendAction,
    BudgetBlock,
    BudgetFacts,
    RunDecision,
    RunKind,
    RunOutcome,
    Step,
    after_attempt,
    after_chain,
    backend_action,
    budget_block,
    budget_resets_at,
    hm,
    job_budget_failure,
    no_other_family,
    without_reviewer,
)
from engine.routing import RoutePlan, Skip, SkipReason
from engine.settings import BackendConfig

F = FailureClass
NOW = 1_767_229_200.0  # 2026-01-01T01:00:00Z: UTC midnight is 23 hours away
MIDNIGHT = NOW + 23 * 3600


def backend(name: str, family: str, window: int, *, paid: bool = False) -> BackendConfig:
    """A config only: the policy reads its family, window and price, never calls it."""
    return BackendConfig(
        name=name, kind="openai", family=family, tier=2, context_window=window, price_in_per_mtok=1.0 if paid else 0.0
    )


FAILED = backend("failed", "anthropic", 100_000)
REST = [
    backend("bigger-same", "anthropic", 200_000),
    backend("smaller-other", "openai", 50_000),
    backend("bigger-other", "google", 300_000),
]


# ---- after one failed call --------------------------------------------------------------------------------

ALL = [c.name for c in REST]
ATTEMPT_ROWS: list[tuple[FailureClass, BackendAction, Step, list[str]]] = [
    # class, what it does to the backend, then, the rest of the chain to try
    (F.RATE_LIMITED, BackendAction.PAUSE, Step.NEXT, ALL),
    (F.QUOTA, BackendAction.PAUSE, Step.NEXT, ALL),
    (F.OVERLOADED, BackendAction.BREAKER, Step.NEXT, ALL),
    (F.SERVER_ERROR, BackendAction.BREAKER, Step.NEXT, ALL),
    (F.TIMEOUT, BackendAction.BREAKER, Step.NEXT, ALL),
    (F.AUTH, BackendAction.DISABLE, Step.NEXT, ALL),
    (F.UNKNOWN, BackendAction.FIRST_SIGHT, Step.NEXT, ALL),
    (F.BACKEND_REJECTED, BackendAction.REJECTED, Step.NEXT, ALL),  # issue 14: a 4xx about the backend itself
    (F.EMPTY_OUTPUT, BackendAction.NONE, Step.NEXT, ALL),
    (F.CONTEXT_OVERFLOW, BackendAction.NONE, Step.NEXT, ["bigger-same", "bigger-other"]),  # larger windows only
    (F.CONTENT_REFUSED, BackendAction.NONE, Step.NEXT, ["smaller-other", "bigger-other"]),  # other families only
    (F.BAD_REQUEST, BackendAction.NONE, Step.STOP, []),
    (F.WORKER_LOST, BackendAction.NONE, Step.STOP, []),
    (F.REVIEW_REJECTED, BackendAction.NONE, Step.STOP, []),
    (F.BUDGET_EXCEEDED, BackendAction.NONE, Step.STOP, []),
    (F.CANCELLED, BackendAction.NONE, Step.STOP, []),
]


def test_every_failure_class_has_a_rule_and_a_row() -> None:
    assert set(RULES) == set(FailureClass)
    assert {row[0] for row in ATTEMPT_ROWS} == set(FailureClass)
    assert {F.RATE_LIMITED, F.QUOTA} == PAUSING


@pytest.mark.parametrize(("cls", "action", "step", "rest"), ATTEMPT_ROWS, ids=[r[0].value for r in ATTEMPT_ROWS])
def test_after_attempt(cls: FailureClass, action: BackendAction, step: Step, rest: list[str]) -> None:
    decision = after_attempt(Failure(failure_class=cls, message="x"), FAILED, list(REST))
    assert backend_action(cls) is action
    assert decision.step is step
    assert [c.name for c in decision.remaining] == rest


def test_after_attempt_leaves_the_callers_list_alone() -> None:
    remaining = list(REST)
    after_attempt(Failure(failure_class=F.CONTENT_REFUSED), FAILED, remaining)
    assert remaining == REST


# ---- budgets ----------------------------------------------------------------------------------------------

BUDGET_ROWS: list[tuple[bool, float, float, BudgetBlock | None]] = [
    # pay per token, spent today, in flight (cap 5.0) -> block
    (False, 9.0, 9.0, None),  # a subscription or a sim never waits for the cap
    (True, 4.0, 0.5, None),
    (True, 5.0, 0.0, BudgetBlock.SPENT),
    (True, 6.0, 0.0, BudgetBlock.SPENT),
    (True, 4.0, 1.0, BudgetBlock.IN_FLIGHT),  # calls still running could reach the cap
]


@pytest.mark.parametrize(("paid", "spent", "in_flight", "block"), BUDGET_ROWS)
def test_budget_block(paid: bool, spent: float, in_flight: float, block: BudgetBlock | None) -> None:
    config = backend("b", "openai", 100_000, paid=paid)
    assert budget_block(config, BudgetFacts(spent_today_usd=spent, cap_usd=5.0, in_flight_usd=in_flight)) is block


@pytest.mark.parametrize(
    ("budget", "spent", "message"),
    [(None, 100.0, None), (1.0, 0.99, None), (1.0, 1.0, "job budget reached: $1.0000 of $1.00")],
)
def test_job_budget_failure(budget: float | None, spent: float, message: str | None) -> None:
    failure = job_budget_failure(budget, spent)
    if message is None:
        assert failure is None
    else:
        assert failure is not None
        assert (failure.failure_class, failure.message, failure.signature) == (F.BUDGET_EXCEEDED, message, "job_budget")


# ---- the end of the chain ---------------------------------------------------------------------------------

CHAIN = ["a", "b", "c"]


def paused(name: str, seconds: float, reason: str = "rate_limited") -> BackendState:
    return BackendState(name=name, paused_until=NOW + seconds, pause_reason=reason)


def disabled(name: str) -> BackendState:
    return BackendState(name=name, disabled=True, pause_reason="auth")


def job(*, attempt: int = 0, max_attempts: int = 3) -> Job:
    return Job(
        id=7,
        type="analysis",
        title="t",
        prompt="p",
        source=Source.OPERATOR,
        priority=Priority.NORMAL,
        state=JobState.RUNNING,
        tier=2,
        run_after=NOW,
        attempt=attempt,
        max_attempts=max_attempts,
        max_revisions=2,
        created_at=NOW,
        updated_at=NOW,
    )


@dataclass
class Row:
    """The facts at the end of a run and the decision expected."""

    id: str
    failure: FailureClass | None
    expected: RunDecision
    plan_states: list[BackendState] = field(default_factory=list)
    skipped: dict[str, Skip] = field(default_factory=dict)
    refreshed: list[BackendState] = field(default_factory=list)  # after this run's failures
    cap_reached: bool = False
    attempt: int = 0
    max_attempts: int = 3
    jitter: float = 0.5


def snooze(seconds: float) -> RunDecision:
    return RunDecision(
        RunKind.SNOOZE, f"no backend available; snoozed until {hm(NOW + seconds)} (no attempt used)", at=NOW + seconds
    )


def park(at: float) -> RunDecision:
    return RunDecision(RunKind.PARK_FOR_BUDGET, f"daily budget reached; parked until {hm(at)} (no attempt used)", at=at)


def retry(cls: FailureClass, delay: float) -> RunDecision:
    return RunDecision(
        RunKind.RETRY_LATER, f"{cls.value} on every backend tried; retry in {delay:.0f}s", at=NOW + delay
    )


def fail(cls: FailureClass) -> RunDecision:
    return RunDecision(RunKind.FAIL, f"failed: {cls.value}")


BUSY = {n: Skip(SkipReason.AT_CONCURRENCY_LIMIT) for n in CHAIN}
BUDGET = {"a": Skip(SkipReason.DAILY_BUDGET), "b": Skip(SkipReason.AT_CONCURRENCY_LIMIT)}

# fmt: off
CHAIN_ROWS = [
    # No backend was called.
    Row("all busy: a short nap", None, snooze(5), skipped=BUSY),
    Row("one paused, rest busy: until it resumes", None, snooze(600), plan_states=[paused("b", 600)],
        skipped=BUSY | {"b": Skip(SkipReason.PAUSED, "rate_limited", NOW + 600)}),
    Row("a pause already over does not count", None, snooze(5), plan_states=[paused("b", -10)], skipped=BUSY),
    Row("daily cap in the plan: park until midnight", None, park(MIDNIGHT), skipped=BUDGET),
    Row("daily cap, a pause ends sooner: park until then", None, park(NOW + 600), plan_states=[paused("c", 600)],
        skipped=BUDGET),
    Row("cap spent between plan and call: park", None, park(MIDNIGHT), skipped=BUSY, cap_reached=True),
    # Every backend tried failed.
    Row("rate limited, the chain has a pause: snooze", F.RATE_LIMITED, snooze(120), refreshed=[paused("a", 120)]),
    Row("quota, the chain has a pause: snooze", F.QUOTA, snooze(3600), refreshed=[paused("a", 3600, "quota")]),
    Row("server errors with every usable backend paused: snooze", F.SERVER_ERROR, snooze(60),
        refreshed=[paused("a", 60, "circuit_open"), paused("b", 90, "circuit_open"), disabled("c")]),
    Row("server errors, one paused of three: retry later", F.SERVER_ERROR, retry(F.SERVER_ERROR, 30),
        refreshed=[paused("a", 60, "circuit_open")]),
    Row("the run's refreshed states win over the plan's", F.RATE_LIMITED, retry(F.RATE_LIMITED, 30),
        plan_states=[paused("a", 600)], refreshed=[BackendState(name="a")]),
    Row("backoff doubles per attempt, jitter low", F.TIMEOUT, retry(F.TIMEOUT, 90), attempt=2, max_attempts=5,
        jitter=0.0),
    Row("backoff, jitter high", F.OVERLOADED, retry(F.OVERLOADED, 30 * 1.25), jitter=1.0),
    Row("last attempt used: fail", F.SERVER_ERROR, fail(F.SERVER_ERROR), attempt=2),
    Row("every backend of the chain disabled: fail", F.AUTH, fail(F.AUTH),
        refreshed=[disabled("a"), disabled("b"), disabled("c")]),
    Row("bad request: fail at once", F.BAD_REQUEST, fail(F.BAD_REQUEST)),
    Row("job budget: the operator decides", F.BUDGET_EXCEEDED,
        RunDecision(RunKind.NEEDS_HUMAN, "budget exceeded: x", why="It ran out of budget.")),
    Row("every family refused: the operator decides", F.CONTENT_REFUSED,
        RunDecision(RunKind.NEEDS_HUMAN, "every family refused")),
    Row("a server error with a paused backend does not wait for it", F.SERVER_ERROR, retry(F.SERVER_ERROR, 30),
        plan_states=[paused("b", 600)]),
]
# fmt: on
# Every other class, with attempts left and nothing paused, waits and retries.
CHAIN_ROWS += [
    Row(f"{cls.value}: retry later", cls, retry(cls, 30))
    for cls in FailureClass
    if cls not in (F.BUDGET_EXCEEDED, F.BAD_REQUEST, F.CONTENT_REFUSED)
]


def test_every_failure_class_and_end_has_a_row() -> None:
    assert {row.failure for row in CHAIN_ROWS} == {*FailureClass, None}
    assert {row.expected.kind for row in CHAIN_ROWS} == set(RunKind)


@pytest.mark.parametrize("row", CHAIN_ROWS, ids=[row.id for row in CHAIN_ROWS])
def test_after_chain(row: Row) -> None:
    plan = RoutePlan(chain=CHAIN, states={s.name: s for s in row.plan_states}, skipped=row.skipped)
    failure = Failure(failure_class=row.failure, message="x") if row.failure is not None else None
    outcome = RunOutcome(failure, {s.name: s for s in row.refreshed}, row.cap_reached)
    decision = after_chain(outcome, plan, job(attempt=row.attempt, max_attempts=row.max_attempts), NOW, row.jitter)
    assert decision == row.expected


def test_budget_resets_at_utc_midnight() -> None:
    assert budget_resets_at(NOW) == MIDNIGHT
    assert hm(MIDNIGHT) == "00:00 UTC"


# ---- a review nobody of another family can take (issue 14) ------------------------------------------------

REVIEW_CHAIN = ["a", "b", "c"]
NO_OTHER = [
    # skips of the review chain, whether no reviewer of another family can take it now or later
    ("every backend of the maker's family", {"a": Skip(SkipReason.SAME_FAMILY), "b": Skip(SkipReason.SAME_FAMILY),
                                             "c": Skip(SkipReason.SAME_FAMILY)}, True),
    ("the others off in config or for credentials", {"a": Skip(SkipReason.SAME_FAMILY),
                                                      "b": Skip(SkipReason.DISABLED_IN_CONFIG),
                                                      "c": Skip(SkipReason.DISABLED, "auth")}, True),
    ("another family only paused: it comes back", {"a": Skip(SkipReason.SAME_FAMILY),
                                                   "b": Skip(SkipReason.PAUSED, "rate_limited", NOW + 60),
                                                   "c": Skip(SkipReason.SAME_FAMILY)}, False),
    ("another family only busy", {"a": Skip(SkipReason.SAME_FAMILY), "b": Skip(SkipReason.AT_CONCURRENCY_LIMIT),
                                  "c": Skip(SkipReason.SAME_FAMILY)}, False),
]


@pytest.mark.parametrize(("skipped", "expected"), [r[1:] for r in NO_OTHER], ids=[r[0] for r in NO_OTHER])
def test_no_other_family(skipped: dict[str, Skip], expected: bool) -> None:
    assert no_other_family(RoutePlan(chain=REVIEW_CHAIN, states={}, skipped=skipped)) is expected


def test_no_other_family_is_false_with_any_candidate() -> None:
    plan = RoutePlan(chain=REVIEW_CHAIN, states={}, candidates=[REST[1]], skipped={"a": Skip(SkipReason.SAME_FAMILY)})
    assert not no_other_family(plan)


@pytest.mark.parametrize(("mode", "age_s", "kind"), [
    ("wait", 3600.0, None),  # waits for ever, as before: the existing behaviour on request
    ("operator", 10.0, RunKind.SNOOZE),  # within the grace: a quiet nap until it ends
    ("operator", 30.0, RunKind.FAIL),  # grace over: the review ends, the store hands its job to the operator
    ("same_family_other_model", 31.0, RunKind.FAIL),  # no other model of the family either: the operator decides
])
def test_without_reviewer(mode: str, age_s: float, kind: RunKind | None) -> None:
    review = job().model_copy(update={"type": "review", "created_at": NOW - age_s})
    decision = without_reviewer(mode, review, "anthropic", NOW, grace_s=30.0)
    assert (decision.kind if decision else None) is kind
    if decision is not None and kind is RunKind.SNOOZE:
        assert decision.quiet and decision.at == NOW + 20
    if decision is not None and kind is RunKind.FAIL:
        assert "anthropic" in decision.reason
