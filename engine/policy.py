"""The engine's routing-and-retry policy: what happens after every backend outcome, decided in one place.

Pure functions over small values: no I/O, no store, no clock read (``now`` is passed in), no randomness of its
own (``jitter`` is passed in). The runner gathers the facts, asks here, and applies the answer; health carries
out what a failure does to its backend and so keeps the backend states the route plan is made from.

- ``RULES`` / ``backend_action``: what each failure class does to the backend and to the rest of the chain.
- ``after_attempt``: after one failed call, go on down the (narrowed) chain or stop.
- ``job_budget_failure`` and ``budget_block``: whether the job's own budget or today's USD cap forbids a call.
- ``after_chain``: no backend produced a result in this run: snooze (for a pause, or deferred for a
  subscription window), park for budget, retry later, fail, or hand to the operator.
- ``no_other_family`` / ``without_reviewer``: a review no backend of another family can ever take (a one-family
  setup): per ``[gate] when_no_other_family``, hand the job to the operator after a grace, or keep waiting.
- ``window_use`` and ``route_with_windows``: quota-aware routing of subscription windows (engine/quota.py):
  which jobs keep a tight window, which move to another backend, which wait for its reset.

The table (DESIGN.md section 6)::

    class             backend             chain
    rate_limited      pause until reset   next
    quota             pause until reset   next
    overloaded        breaker count       next
    server_error      breaker count       next
    timeout           breaker count       next
    auth              disable             next
    unknown           first-sight alert   next
    backend_rejected  breaker count and first-sight alert   next
    empty_output      -                   next
    context_overflow  -                   next with a larger context window
    content_refused   -                   next of another family
    bad_request, worker_lost, review_rejected, budget_exceeded, cancelled    -    stop
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from engine.failures import Failure, FailureClass
from engine.models import BackendState, Job, Priority
from engine.quota import Headroom, JobSize, QuotaWindow, ends_at, fits, headroom
from engine.routing import RoutePlan, Skip, SkipReason
from engine.settings import BackendConfig, QuotaSettings

RETRY_BASE_S = 30.0
SNOOZE_BUSY_S = 5.0
DAY_S = 86_400


class BackendAction(Enum):
    """What a failure does to the backend that failed (``engine.health`` carries it out)."""

    NONE = "none"
    PAUSE = "pause"  # until its reset: the router skips it without sending it anything
    BREAKER = "breaker"  # counts toward the circuit breaker
    DISABLE = "disable"  # bad credentials: off until the credential check passes
    FIRST_SIGHT = "first_sight"  # alert the operator the first time this signature is seen
    REJECTED = "rejected"  # both: counts toward the circuit breaker, and alerts on a new signature


class Then(Enum):
    """What a failure does to the rest of the chain in this run."""

    NEXT = "next"
    NEXT_LARGER_WINDOW = "next with a larger context window"
    NEXT_OTHER_FAMILY = "next of another family"
    STOP = "stop"


@dataclass(frozen=True)
class ClassRule:
    backend: BackendAction
    then: Then


_B, _T = BackendAction, Then
RULES: dict[FailureClass, ClassRule] = {
    FailureClass.RATE_LIMITED: ClassRule(_B.PAUSE, _T.NEXT),
    FailureClass.QUOTA: ClassRule(_B.PAUSE, _T.NEXT),
    FailureClass.OVERLOADED: ClassRule(_B.BREAKER, _T.NEXT),
    FailureClass.SERVER_ERROR: ClassRule(_B.BREAKER, _T.NEXT),
    FailureClass.TIMEOUT: ClassRule(_B.BREAKER, _T.NEXT),
    FailureClass.AUTH: ClassRule(_B.DISABLE, _T.NEXT),
    FailureClass.UNKNOWN: ClassRule(_B.FIRST_SIGHT, _T.NEXT),
    FailureClass.BACKEND_REJECTED: ClassRule(_B.REJECTED, _T.NEXT),
    FailureClass.EMPTY_OUTPUT: ClassRule(_B.NONE, _T.NEXT),
    FailureClass.CONTEXT_OVERFLOW: ClassRule(_B.NONE, _T.NEXT_LARGER_WINDOW),
    FailureClass.CONTENT_REFUSED: ClassRule(_B.NONE, _T.NEXT_OTHER_FAMILY),
    FailureClass.BAD_REQUEST: ClassRule(_B.NONE, _T.STOP),
    FailureClass.WORKER_LOST: ClassRule(_B.NONE, _T.STOP),
    FailureClass.REVIEW_REJECTED: ClassRule(_B.NONE, _T.STOP),
    FailureClass.BUDGET_EXCEEDED: ClassRule(_B.NONE, _T.STOP),
    FailureClass.CANCELLED: ClassRule(_B.NONE, _T.STOP),
}
# Classes that pause their backend until a reset: when one ends a run and a backend of the chain is paused,
# the job waits for the reset instead of spending an attempt.
PAUSING = frozenset(cls for cls, rule in RULES.items() if rule.backend is BackendAction.PAUSE)


def backend_action(failure_class: FailureClass) -> BackendAction:
    return RULES[failure_class].backend


# ---- one attempt ------------------------------------------------------------------------------------------


class Step(Enum):
    NEXT = "next"
    STOP = "stop"


@dataclass(frozen=True)
class AttemptDecision:
    """After a failed call: try ``remaining`` (NEXT) or end the chain here (STOP)."""

    step: Step
    remaining: list[BackendConfig] = field(default_factory=list)


def after_attempt(failure: Failure, failed: BackendConfig, remaining: list[BackendConfig]) -> AttemptDecision:
    """Fall through to the rest of the chain, narrowed where another backend of the same kind cannot help."""
    then = RULES[failure.failure_class].then
    if then is Then.STOP:
        return AttemptDecision(Step.STOP)
    if then is Then.NEXT_LARGER_WINDOW:
        remaining = [c for c in remaining if c.context_window > failed.context_window]
    elif then is Then.NEXT_OTHER_FAMILY:
        remaining = [c for c in remaining if c.family != failed.family]
    return AttemptDecision(Step.NEXT, list(remaining))


# ---- budgets ----------------------------------------------------------------------------------------------


class BudgetBlock(Enum):
    SPENT = "spent"  # today's cap is reached: the job parks until it resets
    IN_FLIGHT = "in_flight"  # calls still running could reach it: pass this backend over, wait briefly


@dataclass(frozen=True)
class BudgetFacts:
    spent_today_usd: float  # on pay-per-token backends since UTC midnight
    cap_usd: float
    in_flight_usd: float  # estimated price of the pay-per-token calls still running


def budget_block(config: BackendConfig, facts: BudgetFacts) -> BudgetBlock | None:
    """Checked before each call, fallbacks included, so jobs routed at the same moment cannot all spend past
    the cap. None: go ahead."""
    if not config.pay_per_token:
        return None
    if facts.spent_today_usd >= facts.cap_usd:
        return BudgetBlock.SPENT
    return BudgetBlock.IN_FLIGHT if facts.spent_today_usd + facts.in_flight_usd >= facts.cap_usd else None


def job_budget_failure(budget_usd: float | None, spent_usd: float) -> Failure | None:
    """The job type's own budget (``budget_usd``), counted over every run of the job: reached, it ends the
    chain with a budget_exceeded failure that the operator decides on."""
    if budget_usd is None or spent_usd < budget_usd:
        return None
    return Failure(
        failure_class=FailureClass.BUDGET_EXCEEDED,
        message=f"job budget reached: ${spent_usd:.4f} of ${budget_usd:.2f}",
        signature="job_budget",
    )


def day_start(now: float) -> float:
    """UTC midnight before ``now``: today's spend is counted from here."""
    return now - now % DAY_S


def budget_resets_at(now: float) -> float:
    return day_start(now) + DAY_S


def hm(ts: float) -> str:
    """A moment as the operator reads it in a decision's reason or an alert."""
    return time.strftime("%H:%M UTC", time.gmtime(ts))


# ---- the end of the chain ---------------------------------------------------------------------------------


class RunKind(Enum):
    SNOOZE = "snooze"  # no attempt used; wake at ``at``
    PARK_FOR_BUDGET = "park_for_budget"  # as snooze, until the daily cap resets (or a pause ends), with an alert
    RETRY_LATER = "retry_later"  # an attempt used; run again at ``at``
    FAIL = "fail"
    NEEDS_HUMAN = "needs_human"  # more attempts cannot help: the operator decides


@dataclass(frozen=True)
class RunDecision:
    kind: RunKind
    reason: str  # the transition's reason, as the job's events show it
    at: float | None = None  # SNOOZE, PARK_FOR_BUDGET, RETRY_LATER: when the job may run again
    why: str | None = None  # NEEDS_HUMAN: what the operator's notice says (None: the notice's default)
    quiet: bool = False  # SNOOZE: no "waits for a reviewer" notice (the operator hears once, at the hand-over)


@dataclass(frozen=True)
class RunOutcome:
    """How a run that produced no result went."""

    failure: Failure | None  # the last failure (or the job budget); None if no backend was called
    # Backend states as refreshed after this run's failures: newer than the plan's, so they win.
    states: dict[str, BackendState] = field(default_factory=dict)
    cap_reached: bool = False  # a pay-per-token backend was passed over because today's cap is spent


def after_chain(outcome: RunOutcome, plan: RoutePlan, job: Job, now: float, jitter: float) -> RunDecision:
    """No backend produced a result: wait for a paused backend or the budget without using an attempt, else
    retry later with backoff (``jitter`` in [0, 1) spreads the retries), fail, or hand the job to the operator."""
    failure = outcome.failure
    states = plan.states | outcome.states
    pauses = _pauses(plan.chain, states, now)
    usable = [n for n in plan.chain if not (n in states and states[n].disabled)]
    all_paused = bool(pauses) and len(pauses) >= len(usable)
    if failure is None and plan.window_waits:
        wake = _wake(min([*plan.window_waits.values(), *pauses]), now)
        names = ", ".join(sorted(plan.window_waits))
        return RunDecision(
            RunKind.SNOOZE, f"deferred for the usage window of {names}; resumes at {hm(wake)} "
            "(no attempt used)", at=wake
        )
    if failure is None and (outcome.cap_reached or plan.blocked_by(SkipReason.DAILY_BUDGET)):
        wake = _wake(min([*pauses, budget_resets_at(now)]), now)
        return RunDecision(
            RunKind.PARK_FOR_BUDGET, f"daily budget reached; parked until {hm(wake)} (no attempt used)", at=wake
        )
    if failure is None or all_paused or (failure.failure_class in PAUSING and pauses):
        wake = _wake(min(pauses, default=None), now)
        return RunDecision(RunKind.SNOOZE, f"no backend available; snoozed until {hm(wake)} (no attempt used)", at=wake)
    return _after_failures(failure, job, bool(usable), now, jitter)


def _after_failures(failure: Failure, job: Job, any_usable: bool, now: float, jitter: float) -> RunDecision:
    cls = failure.failure_class
    if cls is FailureClass.BUDGET_EXCEEDED:
        return RunDecision(RunKind.NEEDS_HUMAN, f"budget exceeded: {failure.message}", why="It ran out of budget.")
    if cls is FailureClass.BAD_REQUEST or not any_usable:
        return RunDecision(RunKind.FAIL, f"failed: {cls.value}")
    if cls is FailureClass.CONTENT_REFUSED:
        return RunDecision(RunKind.NEEDS_HUMAN, "every family refused")
    if job.attempt + 1 >= job.max_attempts:
        return RunDecision(RunKind.FAIL, f"failed: {cls.value}")
    delay = RETRY_BASE_S * (2**job.attempt) * (0.75 + jitter / 2)
    return RunDecision(
        RunKind.RETRY_LATER, f"{cls.value} on every backend tried; retry in {delay:.0f}s", at=now + delay
    )


def _pauses(chain: list[str], states: dict[str, BackendState], now: float) -> list[float]:
    """When each paused backend of the chain comes back."""
    until = [states[n].paused_until for n in chain if n in states]
    return [u for u in until if u is not None and u > now]


def _wake(until: float | None, now: float) -> float:
    """The pause's end, or a short nap when nothing names a time (the chain is only busy)."""
    return until if until is not None and until > now else now + SNOOZE_BUSY_S


# ---- a review nobody of another family can take ------------------------------------------------------------

# Skips that do not end by waiting: the backend is of the maker's family, not there, off in the config, or off
# for its credentials (until the operator renews them).
_NEVER_NOW = frozenset({SkipReason.SAME_FAMILY, SkipReason.NOT_CONFIGURED, SkipReason.DISABLED_IN_CONFIG,
                        SkipReason.DISABLED, SkipReason.OPERATOR_AVOIDED})


def no_other_family(plan: RoutePlan) -> bool:
    """A review plan with no reviewer of another family, now or after any pause: every backend of the chain is of
    the maker's family or out of service. A paused one comes back by itself, so it is not counted as missing."""
    if plan.candidates:
        return False
    skips = [plan.skipped.get(name) for name in plan.chain]
    return all(s is not None and s.reason in _NEVER_NOW for s in skips)


def without_reviewer(mode: str, job: Job, maker_family: str, now: float, grace_s: float) -> RunDecision | None:
    """A review job nobody can take (``no_other_family``): None to keep waiting (``wait``); else a quiet snooze
    until the grace since the review was asked ends, then the end of the review, which hands its job to the
    operator with the maker's result (the store does that for a review that ends without a verdict)."""
    if mode == "wait":
        return None
    until = job.created_at + grace_s
    if now < until:
        return RunDecision(RunKind.SNOOZE, f"no reviewer of another family than {maker_family}; waiting "
                           f"until {hm(until)} before handing it to the operator", at=until, quiet=True)
    return RunDecision(RunKind.FAIL, f"no reviewer of another model family than {maker_family} is configured "
                       "or enabled (gate.when_no_other_family); the operator decides")


# ---- subscription windows (quota-aware routing) -----------------------------------------------------------
#
#     headroom          urgent  fits   fallback   use
#     ok / unknown      -       yes/?  -          USE
#     ok / unknown      -       no     yes        MOVE    a long job is not started on a window it will not last
#     ok / unknown      yes     no     no         USE     the operator's work is never held back by a guess
#     ok / unknown      no      no     no         DEFER
#     tight             yes     yes/?  -          USE     operator and high-priority work keeps the subscription
#     tight             yes     no     yes        MOVE
#     tight             yes     no     no         USE
#     tight             no      -      yes        MOVE    background work goes elsewhere ...
#     tight             no      -      no         DEFER   ... or waits for the reset
#     exhausted         (the backend is paused until its reset: routing already passed it over)


class WindowUse(Enum):
    USE = "use"  # the job keeps the subscription
    MOVE = "move"  # passed over: another backend of the plan takes the job
    DEFER = "defer"  # passed over, and the job waits for the window's reset


@dataclass(frozen=True)
class WindowFacts:
    headroom: Headroom
    urgent: bool  # operator or high priority, or a deadline before the window resets
    fits: bool | None  # a typical run of the job's type likely ends inside what is left (None: cannot tell)
    fallback: bool  # another backend of the plan can take the job (not itself short of window)


def window_use(facts: WindowFacts) -> WindowUse:
    """What one subscription backend's window means for one job (the table above)."""
    if facts.headroom is Headroom.TIGHT and not facts.urgent:
        return WindowUse.MOVE if facts.fallback else WindowUse.DEFER
    if facts.fits is False:
        if facts.fallback:
            return WindowUse.MOVE
        return WindowUse.USE if facts.urgent or facts.headroom is Headroom.TIGHT else WindowUse.DEFER
    return WindowUse.USE


@dataclass(frozen=True)
class _WindowView:
    headroom: Headroom
    fits: bool | None
    resets_at: float | None  # when the limiting window resets
    note: str


_WORST = (Headroom.UNKNOWN, Headroom.OK, Headroom.TIGHT, Headroom.EXHAUSTED)


def _view(windows: list[QuotaWindow], size: JobSize, now: float, quota: QuotaSettings) -> _WindowView:
    """A backend's windows taken together: the tightest one limits."""
    worst, fit = Headroom.UNKNOWN, None
    limiting: QuotaWindow | None = None
    rank: tuple[int, bool, float] = (-1, False, 0.0)
    for window in windows:
        room = headroom(window, now, quota.warn_share)
        ok = fits(window, size, now, quota.headroom_share)
        fit = False if False in (ok, fit) else (ok if ok is not None else fit)
        worst = max(worst, room, key=_WORST.index)
        # The limiting window: the tightest, one the job will not last, the later reset on a tie.
        this = (_WORST.index(room), ok is False, ends_at(window) or 0.0)
        if this > rank:
            limiting, rank = window, this
    note, reset = "", ends_at(limiting) if limiting is not None else None
    if limiting is not None:
        note = f"{limiting.kind} {limiting.status.value}" + (f", resets {hm(reset)}" if reset else "")
    return _WindowView(worst, fit, reset, note)


def _urgent(job: Job) -> bool:
    """Operator and high-priority work keeps a subscription's window. Every review is queued at least high (the
    gate's haste, engine.gates): a review of background work is still background work for a window; a review of
    the operator's job has the operator's priority."""
    if job.type == "review":
        return job.priority == Priority.OPERATOR
    return job.priority <= Priority.HIGH


def _with_running(size: JobSize, running: int) -> JobSize:
    """What a window must still hold for this job: its typical run, and one more for each call in flight."""
    return JobSize(size.tokens * (1 + running), size.duration_s) if size.tokens is not None and running else size


def route_with_windows(
    plan: RoutePlan,
    windows: dict[str, list[QuotaWindow]],
    job: Job,
    size: JobSize,
    quota: QuotaSettings,
    now: float,
    running: Mapping[str, int] | None = None,
) -> RoutePlan:
    """The plan with subscription backends passed over where their windows should be spared for this job:
    moved (another candidate takes it) or deferred (the plan's ``window_waits`` say until when). ``running``:
    the calls in flight per backend, each counted as one more typical run the window must still hold."""
    if not quota.enabled or not any(windows.get(c.name) for c in plan.candidates):
        return plan
    running = running or {}
    views = {c.name: _view(windows.get(c.name, []), _with_running(size, running.get(c.name, 0)), now, quota)
             for c in plan.candidates}
    roomy = {n for n, v in views.items() if v.headroom in (Headroom.OK, Headroom.UNKNOWN) and v.fits is not False}
    keep: list[BackendConfig] = []
    for config in plan.candidates:
        view = views[config.name]
        reset = view.resets_at
        urgent = _urgent(job) or (job.deadline is not None and reset is not None and job.deadline < reset)
        use = window_use(WindowFacts(view.headroom, urgent, view.fits, bool(roomy - {config.name})))
        if use is WindowUse.USE:
            keep.append(config)
            continue
        reason = SkipReason.WINDOW_TOO_SHORT if view.fits is False else SkipReason.WINDOW_KEPT
        plan.skipped[config.name] = Skip(reason, view.note, reset)
        if use is WindowUse.DEFER:
            plan.window_waits[config.name] = reset if reset is not None and reset > now else now + SNOOZE_BUSY_S
    plan.candidates = keep
    return plan
