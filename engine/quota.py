"""Subscription usage windows: what Switchboard knows about each one, and what it predicts. Pure: no I/O, no clock.

A subscription backend (Claude Max through the Claude Code CLI, a ChatGPT plan through Codex) has usage windows,
a rolling five-hour one and a weekly one, shared by the backends of one plan (one CLI login and one model family:
Claude Code's opus and sonnet draw on one Max plan; ``plan_of``). Per plan and window kind, a ``QuotaWindow`` keeps:

- what the CLI reports (its ``rate_limit_event``: status allowed / allowed_warning / rejected, ``resetsAt``, the
  share used when it says so), read into ``WindowReport`` by the backend;
- Switchboard's own count of tokens and runs inside the current window;
- the token counts at which past windows ran out (``exhaustions``), from which the window's size is learned.
  The size is never invented: without a report of the share used and without a past exhaustion it stays unknown,
  and what is learned is shown as what it is ("ran out after about 1.2M tokens of Switchboard's").

``headroom`` turns a window into OK / TIGHT / EXHAUSTED / UNKNOWN (tight: the CLI warns, the share used passed
``warn_share``, or at the current burn rate it runs out before it resets); ``fits`` says whether a job of a
typical size will likely finish inside what is left. What to do with a job then is ``engine.policy``'s call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

HOUR_S = 3600.0
DAY_S = 86_400.0
# The lengths of the windows the Claude CLI names (rateLimitType); an unknown kind is bounded by the longest.
WINDOW_LENGTH_S: dict[str, float] = {
    "five_hour": 5 * HOUR_S,
    "seven_day": 7 * DAY_S,
    "seven_day_opus": 7 * DAY_S,
    "seven_day_sonnet": 7 * DAY_S,
    "seven_day_overage_included": 7 * DAY_S,
}
LONGEST_WINDOW_S = 7 * DAY_S
# A burn rate measured over less than this is noise, not a rate.
MIN_ELAPSED_FOR_RATE_S = 600.0
# A reported share below this says too little to scale Switchboard's own count into a window size.
MIN_SHARE_TO_SCALE = 0.05
KEEP_EXHAUSTIONS = 5
# A reported reset this far in the past at most may simply have passed during the call that reported it.
PAST_TOLERANCE_S = 1800.0


class WindowStatus(StrEnum):
    ALLOWED = "allowed"
    WARNING = "allowed_warning"
    REJECTED = "rejected"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, text: str | None) -> WindowStatus:
        try:
            return cls(text or "unknown")
        except ValueError:
            return cls.UNKNOWN


class Headroom(StrEnum):
    OK = "ok"
    TIGHT = "tight"  # warning, past warn_share, or predicted to run out before the reset
    EXHAUSTED = "exhausted"  # rejected until the reset (the backend's pause carries it)
    UNKNOWN = "unknown"  # nothing reported: the backend is treated as before quota-aware routing


class WindowReport(BaseModel):
    """One window as a backend reported it in one run (``resets_at`` as sent: clamping is ``clamp_resets_at``)."""

    model_config = ConfigDict(defer_build=True)  # built on first use, as the records of engine.models

    kind: str
    status: WindowStatus = WindowStatus.UNKNOWN
    resets_at: float | None = None
    utilization: float | None = None  # the share used, 0..1 (a little above 1 is possible)


class QuotaWindow(BaseModel):
    """One plan's window of one kind, as persisted (``quota_windows``)."""

    model_config = ConfigDict(defer_build=True)

    plan: str  # plan_of(kind, family) of the backends that share it
    kind: str
    status: WindowStatus = WindowStatus.UNKNOWN
    resets_at: float | None = None
    utilization: float | None = None
    started_at: float | None = None  # this window's start: resets_at - its length, or Switchboard's first use
    used_tokens: int = 0  # Switchboard's own, inside this window
    runs: int = 0
    moved: int = 0  # jobs routed elsewhere to spare this window
    deferred: int = 0  # jobs waiting for this window's reset
    exhaustions: list[int] = Field(default_factory=list)  # own tokens used when past windows ran out
    # The first reported share in this window and Switchboard's count then: the window's size is scaled from what
    # Switchboard used since (work done elsewhere before it, by the operator's own sessions, is not Switchboard's).
    base_share: float | None = None
    base_tokens: int = 0
    updated_at: float = 0.0

    @property
    def length_s(self) -> float | None:
        return WINDOW_LENGTH_S.get(self.kind)

    @property
    def known(self) -> bool:
        """The backend reported something about this window (or it ran out once, which dates its reset)."""
        return self.status is not WindowStatus.UNKNOWN or self.resets_at is not None


@dataclass(frozen=True)
class Clamped:
    value: float | None
    clamped: bool  # the raw value was in the past or too far ahead (the caller logs it once)


def clamp_resets_at(raw: float | None, kind: str, now: float) -> Clamped:
    """A reported reset time, kept between now and one window length ahead (clock jumps, bad values)."""
    if raw is None:
        return Clamped(None, False)
    if raw > 1e12:  # milliseconds
        raw /= 1000.0
    limit = now + WINDOW_LENGTH_S.get(kind, LONGEST_WINDOW_S)
    if raw < now:  # a reset that passed while the call ran is no clock trouble: only one well in the past is
        return Clamped(now, raw < now - PAST_TOLERANCE_S)
    if raw > limit:
        return Clamped(limit, True)
    return Clamped(raw, False)


def ends_at(window: QuotaWindow) -> float | None:
    """When the window resets: as reported, else one length after Switchboard's first use inside it."""
    if window.resets_at is not None:
        return window.resets_at
    if window.started_at is not None and window.length_s is not None:
        return window.started_at + window.length_s
    return None


def plan_of(backend_kind: str, family: str) -> str:
    """The plan a subscription backend's windows belong to: the backends of one CLI and one model family share
    a login and so its windows (``claude_cli:anthropic``)."""
    return f"{backend_kind}:{family}"


def fresh(plan: str, kind: str, now: float) -> QuotaWindow:
    return QuotaWindow(plan=plan, kind=kind, updated_at=now)


def roll(window: QuotaWindow, now: float) -> QuotaWindow:
    """The window as it is at ``now``: past its reset it starts again (counts at zero, status unknown until the
    backend reports it), keeping what was learned from past exhaustions."""
    ends = ends_at(window)
    if ends is None or ends > now:
        return window
    return QuotaWindow(plan=window.plan, kind=window.kind, exhaustions=window.exhaustions, updated_at=now)


def observe(window: QuotaWindow, report: WindowReport, resets_at: float | None, now: float) -> QuotaWindow:
    """Apply one report (``resets_at`` already clamped). A reset time clearly later than the known one starts a
    new window; a move into ``rejected`` records how much Switchboard had used (the window's size, learned)."""
    current = roll(window, now)
    if resets_at is not None and current.resets_at is not None and resets_at > current.resets_at + HOUR_S:
        current = QuotaWindow(plan=current.plan, kind=current.kind, exhaustions=current.exhaustions)
    exhaustions = current.exhaustions
    if report.status is WindowStatus.REJECTED and current.status is not WindowStatus.REJECTED and current.used_tokens:
        exhaustions = [*current.exhaustions, current.used_tokens][-KEEP_EXHAUSTIONS:]
    length = current.length_s
    reset = resets_at if resets_at is not None else current.resets_at
    started = current.started_at
    if reset is not None and length is not None:
        started = reset - length
    utilization = report.utilization if report.utilization is not None else current.utilization
    base_share, base_tokens = current.base_share, current.base_tokens
    if base_share is None and report.utilization is not None:
        base_share, base_tokens = report.utilization, current.used_tokens
    if report.status is WindowStatus.REJECTED:
        utilization = max(utilization or 0.0, 1.0)
    return current.model_copy(update={
        "status": report.status if report.status is not WindowStatus.UNKNOWN else current.status,
        "resets_at": reset, "utilization": utilization, "started_at": started, "exhaustions": exhaustions,
        "base_share": base_share, "base_tokens": base_tokens, "updated_at": now,
    })


def add_usage(window: QuotaWindow, tokens: int, now: float) -> QuotaWindow:
    """Count one run of Switchboard's inside the window (its first use dates a window nobody reported)."""
    current = roll(window, now)
    return current.model_copy(update={
        "used_tokens": current.used_tokens + max(0, tokens), "runs": current.runs + 1,
        "started_at": current.started_at if current.started_at is not None else now, "updated_at": now,
    })


def capacity_tokens(window: QuotaWindow) -> int | None:
    """Tokens a whole window holds, where it can be told: what Switchboard used since the first report of the
    share, over how much the share grew since (at least ``MIN_SHARE_TO_SCALE``); else the smallest amount at
    which a past window ran out (the cautious end). None: unknown."""
    share, base = window.utilization, window.base_share
    if share is not None and base is not None and share - base >= MIN_SHARE_TO_SCALE \
            and window.used_tokens > window.base_tokens:
        return int((window.used_tokens - window.base_tokens) / (min(share, 1.0) - base))
    return min(window.exhaustions) if window.exhaustions else None


def share_used(window: QuotaWindow) -> float | None:
    """The share of the window used: as reported, else from the learned size; None when neither is known."""
    if window.utilization is not None:
        return window.utilization
    capacity = min(window.exhaustions) if window.exhaustions else None
    return window.used_tokens / capacity if capacity else None


def burn_rate(window: QuotaWindow, now: float) -> float | None:
    """Share of the window per second so far in this window (None: too early or nothing known)."""
    share = share_used(window)
    if share is None or window.started_at is None:
        return None
    elapsed = now - window.started_at
    return share / elapsed if elapsed >= MIN_ELAPSED_FOR_RATE_S else None


def projected_share(window: QuotaWindow, now: float) -> float | None:
    """The share used by the reset if work goes on at the current burn rate."""
    share, rate = share_used(window), burn_rate(window, now)
    if share is None or rate is None or window.resets_at is None:
        return None
    return share + rate * max(0.0, window.resets_at - now)


def headroom(window: QuotaWindow | None, now: float, warn_share: float) -> Headroom:
    if window is None:
        return Headroom.UNKNOWN
    window = roll(window, now)
    if window.status is WindowStatus.REJECTED:
        return Headroom.EXHAUSTED
    share = share_used(window)
    if window.status is WindowStatus.WARNING or (share is not None and share >= warn_share):
        return Headroom.TIGHT
    projected = projected_share(window, now)
    if projected is not None and projected >= 1.0:
        return Headroom.TIGHT
    return Headroom.OK if window.known or share is not None else Headroom.UNKNOWN


@dataclass(frozen=True)
class JobSize:
    """A typical run of a job type (from past runs): tokens and seconds, None where there is no history."""

    tokens: int | None = None
    duration_s: float | None = None


def fits(window: QuotaWindow | None, size: JobSize, now: float, headroom_share: float) -> bool | None:
    """Will a run of ``size`` likely finish inside what is left of the window (keeping ``headroom_share``)?
    None when it cannot be told (no history of the type, or nothing known of the window)."""
    if window is None:
        return None
    window = roll(window, now)
    share = share_used(window)
    capacity = capacity_tokens(window)
    if share is not None and capacity and size.tokens is not None:
        return share + size.tokens / capacity <= 1.0 - headroom_share
    rate = burn_rate(window, now)
    if share is not None and rate and size.duration_s is not None and window.resets_at is not None:
        time_left_s = (1.0 - headroom_share - share) / rate
        return time_left_s >= min(size.duration_s, window.resets_at - now)
    return None


def describe(window: QuotaWindow, now: float) -> str:
    """One line for /status, ``switchboard backends`` and the digest."""
    window = roll(window, now)
    name = window.kind.replace("_", "-")
    if not window.known and share_used(window) is None:
        own = f" (Switchboard used {_tokens(window.used_tokens)} tokens in {window.runs} run(s))" if window.runs else ""
        return f"{name}: window unknown{own}"
    status = {WindowStatus.ALLOWED: "ok", WindowStatus.WARNING: "WARNING", WindowStatus.REJECTED: "EXHAUSTED",
              WindowStatus.UNKNOWN: "unknown"}[window.status]
    parts = [f"{name}: {status}"]
    if window.utilization is not None:
        parts.append(f"{window.utilization:.0%} used")
    elif (share := share_used(window)) is not None:
        parts.append(f"~{share:.0%} used (learned)")
    if window.resets_at is not None:
        parts.append(f"resets {time.strftime('%a %H:%M UTC', time.gmtime(window.resets_at))}")
    parts.append(f"Switchboard used {_tokens(window.used_tokens)} tokens in {window.runs} run(s)")
    if window.moved or window.deferred:
        parts.append(f"{window.moved} moved, {window.deferred} deferred")
    if window.exhaustions:
        low, high = min(window.exhaustions), max(window.exhaustions)
        span = _tokens(low) if low == high else f"{_tokens(low)}-{_tokens(high)}"
        parts.append(f"past windows ran out after {span} of Switchboard's tokens")
    return ", ".join(parts)


def summary(windows: list[QuotaWindow], now: float) -> list[str]:
    """A subscription backend's windows, one line each; "window unknown" when it never reported one."""
    return [describe(w, now) for w in windows] or ["window unknown"]


def _tokens(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1e6:.1f}M"
    if count >= 1000:
        return f"{count / 1e3:.0f}k"
    return str(count)
