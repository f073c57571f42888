"""Simulated twins of the configured backends, and the drill's own copy of the settings.

A twin keeps its backend's config whole (name, kind, family, tier, prices, subscription flag, concurrency), so
the router, the daily USD cap, the gate's family rule and the workspace treat it as they would the real one;
only the call is simulated. It answers as the scenario's twin profile says (latency, tokens, failure and 429
rates, how often it rejects as a reviewer) and as the incidents active at the time of the call say: an outage
answers 529, a rate limit 429 with its retry-after, an auth incident 401 (and its credential check shows the
expiry ahead, as an OAuth token's does), slow multiplies the latency (past the timeout: a timeout), garbage is
an unparseable answer, quota a subscription window exhausted until the incident ends, or, with
``window_tokens``, a window that fills with the calls of the twins it hits (one plan: one window for all of
them): it reports its share used on every answer as the Claude CLI does (warning past 75%), a call running when
it fills is cut off, and once full every call meets the wall (a 429 usage limit until the window resets at the
incident's end). Answers are labelled as simulated. Every draw comes from a generator seeded by (seed, backend,
job, call number): the same drill gives the same answers.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from engine.backends.base import BackendRequest, BackendResult, CredentialStatus, ProgressCallback, Usage, price_usage
from engine.backends.sim import _persona_reply, _verdict
from engine.clock import Clock
from engine.drill.scenario import Incident, IncidentKind, Scenario
from engine.errors import ConfigError
from engine.failures import Failure, FailureClass, classify_http
from engine.quota import WindowReport, WindowStatus
from engine.settings import BackendConfig, Settings, TelegramSettings

ERROR_LATENCY_S = 1.5  # an error answer comes back fast
# What a twin's filling window answers (the drill's report counts the calls by these).
WALL_TEXT = "simulated: usage limit reached: the subscription window is full"
CUT_TEXT = "simulated: the subscription window ran out mid-run"
# What the engine reads as the end of time for its real-time waits: the drill wakes it on the virtual clock.
NEVER_S = 1e9


@dataclass(frozen=True)
class Window:
    """One incident resolved against the configuration: which twins it hits, from when to when (epoch s)."""

    index: int
    kind: IncidentKind
    target: str
    names: frozenset[str]
    start: float
    end: float
    rate: float
    retry_after_s: float
    factor: float
    forecast: bool
    window_tokens: int | None = None  # quota: a window that fills with use

    @property
    def fills(self) -> bool:
        return self.kind == "quota" and self.window_tokens is not None

    def active(self, now: float) -> bool:
        return self.start <= now < self.end


def drill_settings(settings: Settings, home: Path, without: list[str]) -> Settings:
    """The operator's settings for a drill: a fresh data folder, no Telegram, no memory, the ``without``
    backends gone (and out of every routing chain), and the engine's real-time waits turned off (the drill
    wakes it on the virtual clock). Copied, not re-read: no environment variable can point it elsewhere."""
    names = [b.name for b in settings.backends]
    for name in without:
        if name not in names:
            raise ConfigError(f"--without {name}: no such backend (known: {', '.join(names)})")
    kept = [b for b in settings.backends if b.name not in without and b.enabled]
    if not kept:
        raise ConfigError("--without removes every enabled backend: nothing would be left to run the drill")
    gone = set(without)
    routing = {t: [n for n in chain if n not in gone] for t, chain in settings.routing.items()}
    return settings.model_copy(
        update={
            "home": home,
            "detect_backends": False,
            "backends": kept,
            "routing": {t: chain for t, chain in routing.items() if chain},
            "telegram": TelegramSettings(operator_ids=settings.telegram.operator_ids),
            "engine": settings.engine.model_copy(update={"tick_s": NEVER_S, "cross_process_poll_s": NEVER_S}),
            "memory": settings.memory.model_copy(update={"enabled": False}),
        }
    )


def resolve_incidents(scenario: Scenario, configured: Settings, drill: Settings, day0: float) -> list[Window]:
    """Each incident's twins. A backend or family must be in the configuration (else ConfigError naming the
    key); one removed with --without is simply not hit."""
    all_names = [b.name for b in configured.backends]
    kept = list(drill.backends)
    windows = []
    for index, incident in enumerate(scenario.incidents):
        names = _targets(index, incident, all_names, configured, kept)
        windows.append(
            Window(index, incident.kind, incident.target(), frozenset(names), day0 + incident.start_s,
                   day0 + incident.end_s, incident.rate, incident.retry_after_s, incident.factor, incident.forecast,
                   incident.window_tokens)
        )
    return windows


def _targets(index: int, incident: Incident, all_names: list[str], configured: Settings,
             kept: list[BackendConfig]) -> list[str]:
    if incident.backend is not None:
        if incident.backend not in all_names:
            raise ConfigError(f"incidents[{index}].backend: no backend {incident.backend!r} in the configuration "
                              f"(known: {', '.join(all_names)})")
        return [b.name for b in kept if b.name == incident.backend]
    if incident.family is not None:
        if not any(b.family == incident.family for b in configured.backends):
            families = sorted({b.family for b in configured.backends})
            raise ConfigError(f"incidents[{index}].family: no backend of family {incident.family!r} in the "
                              f"configuration (known: {', '.join(families)})")
        return [b.name for b in kept if b.family == incident.family]
    primary = kept[0]  # the first backend the configuration lists (after --without)
    if incident.role == "primary":
        return [primary.name]
    if incident.role == "primary-family":
        return [b.name for b in kept if b.family == primary.family]
    return [b.name for b in kept]


# A filling window warns past this share, as the subscription API's first threshold does.
WINDOW_WARNING_SHARE = 0.75


class TwinBackend:
    def __init__(self, config: BackendConfig, profile: dict[str, float], windows: list[Window], clock: Clock,
                 seed: int, fills: dict[int, int] | None = None) -> None:
        self._config = config
        self._profile = profile
        self._windows = [w for w in windows if config.name in w.names]
        self._clock = clock
        self._seed = seed
        self._calls = 0
        self._fills = fills if fills is not None else {}  # tokens used in each filling window, shared by its twins

    @property
    def config(self) -> BackendConfig:
        return self._config

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        self._calls += 1
        rng = random.Random(f"{self._seed}:{self._config.name}:{request.job_id}:{self._calls}")
        started = self._clock.now()
        hit = self._incident(started, rng)
        window = self._filling(started)
        if window is not None and self._fills.get(window.index, 0) >= (window.window_tokens or 0):
            await self._clock.sleep(ERROR_LATENCY_S)
            return self._window_result(window, "full", started)
        if hit is not None and hit.kind in ("outage", "rate_limit", "auth", "quota"):
            await self._clock.sleep(ERROR_LATENCY_S)
            return self._failed(self._incident_failure(hit), started)
        jitter = self._profile["latency_jitter"]
        latency = self._profile["latency_s"] * (1 + jitter * (2 * rng.random() - 1))
        if hit is not None and hit.kind == "slow":
            latency *= hit.factor
        timeout = min(request.timeout_s, self._config.timeout_s)
        if latency > timeout:
            await self._clock.sleep(timeout)
            return self._failed(Failure(failure_class=FailureClass.TIMEOUT, message=f"simulated: no answer in "
                                        f"{timeout:.0f} s", signature="sim:timeout"), started)
        await self._clock.sleep(latency)
        if progress is not None:
            await progress(f"{self._config.name} (simulated twin) working")
        failure = self._drawn_failure(rng)
        if hit is not None and hit.kind == "garbage":
            failure = Failure(failure_class=FailureClass.UNKNOWN, message="simulated: malformed response (not "
                              "JSON)", signature="sim:malformed_response")
        if failure is not None:
            return self._failed(failure, started)
        answer = self._answer(request, rng, started)
        return answer if window is None else self._fill(window, answer, started)

    def _incident(self, now: float, rng: random.Random) -> Window | None:
        for window in self._windows:
            if not window.fills and window.active(now) and (window.rate >= 1.0 or rng.random() < window.rate):
                return window
        return None

    def _filling(self, now: float) -> Window | None:
        return next((w for w in self._windows if w.fills and w.active(now)), None)

    def _fill(self, window: Window, answer: BackendResult, started: float) -> BackendResult:
        """Count the call's tokens in the window: past full, the call was cut off mid-run."""
        used = self._fills.get(window.index, 0) + answer.usage.input_tokens + answer.usage.output_tokens
        self._fills[window.index] = used
        if used > (window.window_tokens or 0):
            return self._window_result(window, "cut", started).model_copy(update={"usage": answer.usage})
        share = used / (window.window_tokens or 1)
        status = WindowStatus.WARNING if share >= WINDOW_WARNING_SHARE else WindowStatus.ALLOWED
        report = WindowReport(kind="five_hour", status=status, resets_at=window.end, utilization=round(share, 4))
        return answer.model_copy(update={"windows": [report]})

    def _window_result(self, window: Window, how: str, started: float) -> BackendResult:
        """The wall: a 429 usage limit until the window resets, as the Claude CLI reports it."""
        text = WALL_TEXT if how == "full" else CUT_TEXT
        failure = Failure(failure_class=FailureClass.RATE_LIMITED, message=text, http_status=429,
                          resume_at=window.end, signature=f"sim:window_{how}")
        report = WindowReport(kind="five_hour", status=WindowStatus.REJECTED, resets_at=window.end, utilization=1.0)
        return self._failed(failure, started).model_copy(update={"windows": [report]})

    def _incident_failure(self, window: Window) -> Failure:
        now = self._clock.now()
        if window.kind == "quota":
            return Failure(failure_class=FailureClass.QUOTA, message="simulated: usage limit reached for this "
                           "subscription window", resume_at=window.end, signature="sim:window")
        status, error, headers = {
            "outage": (529, "overloaded_error", {}),
            "rate_limit": (429, "rate_limit_error", {"retry-after": f"{window.retry_after_s:.0f}"}),
            "auth": (401, "authentication_error", {}),
        }[window.kind]
        body = json.dumps({"type": "error", "error": {"type": error, "message": f"simulated {window.kind}"}})
        return classify_http(status, body, headers, now)

    def _drawn_failure(self, rng: random.Random) -> Failure | None:
        if rng.random() < self._profile["rate_limit_rate"]:
            headers = {"retry-after": f"{self._profile['retry_after_s']:.0f}"}
            return classify_http(429, '{"error": {"type": "rate_limit_error"}}', headers, self._clock.now())
        if rng.random() < self._profile["failure_rate"]:
            return classify_http(500, '{"error": {"type": "api_error"}}', {}, self._clock.now())
        return None

    def _failed(self, failure: Failure, started: float) -> BackendResult:
        latency_ms = (self._clock.now() - started) * 1000.0
        return BackendResult(model=self._config.model, latency_ms=latency_ms, failure=failure)

    def _answer(self, request: BackendRequest, rng: random.Random, started: float) -> BackendResult:
        label = f"[simulated twin of {self._config.name}]"
        if request.job_type == "review":
            text = _verdict(4.0 if rng.random() < self._profile["reject_rate"] else 8.0)
        elif request.job_type == "chat":
            text = _persona_reply(request.prompt, label)
        else:
            text = f"{label} Result for: {request.prompt.strip()[:200]}"
        if request.workspace is not None and request.job_type == "coding":
            checkpoints = request.workspace / "checkpoints"
            checkpoints.mkdir(parents=True, exist_ok=True)
            (checkpoints / "tests.txt").write_text(f"{label} 1 passed (simulated test run)\n", encoding="utf-8")
        usage = Usage(input_tokens=int(self._profile["tokens_in"]), output_tokens=int(self._profile["tokens_out"]))
        # A subscription's run reports its list price (saved, not spent), as Claude Code's total_cost_usd does.
        listed = self._config.model_copy(update={"subscription": False})
        return BackendResult(text=text, usage=usage, cost_usd=price_usage(self._config, usage),
                             list_price_usd=price_usage(listed, usage) if self._config.subscription else 0.0,
                             session_id=f"twin-{request.job_id}", model=self._config.model,
                             latency_ms=(self._clock.now() - started) * 1000.0)

    async def check_credentials(self) -> CredentialStatus:
        now = self._clock.now()
        auth = [w for w in self._windows if w.kind == "auth"]
        if any(w.active(now) for w in auth):
            return CredentialStatus(ok=False, message="simulated: the OAuth token has expired")
        ahead = [w.start for w in auth if w.forecast and w.start > now]
        return CredentialStatus(ok=True, message=f"simulated twin of {self._config.name}",
                                expires_at=min(ahead) if ahead else None)

    async def aclose(self) -> None:
        return None


def build_twins(drill: Settings, scenario: Scenario, windows: list[Window], clock: Clock,
                seed: int) -> dict[str, TwinBackend]:
    fills: dict[int, int] = {}
    return {
        config.name: TwinBackend(config, scenario.twin_profile(config.name, config.tier), windows, clock, seed, fills)
        for config in drill.backends
    }


def as_subscriptions(drill: Settings, windows: list[Window]) -> Settings:
    """The twins a filling window hits are subscriptions (a window is what a subscription has): no price per
    call, and quota-aware routing keeps their window."""
    names = {n for w in windows if w.fills for n in w.names}
    if not names:
        return drill
    backends = [b.model_copy(update={"subscription": True}) if b.name in names else b for b in drill.backends]
    return drill.model_copy(update={"backends": backends})
