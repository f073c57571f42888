"""Carrying out what a failure does to the backend that failed, and what a success after failures undoes.

``engine.policy`` says which action a failure class takes (``backend_action``); this module does it: a pause
until the reset (rate limits, quota), the circuit breaker (repeated overloads and server errors: one alert per
outage, one recovery notice), disabling on bad credentials (one urgent alert; the pulse's credential check
re-enables it), and the first-sight alert for a failure signature never seen before (both of the last two for a
4xx that is the backend's own: ``backend_rejected``). It decides no route: the
backend states it writes are what the next route plan (and the end of this run) is decided from.
"""

from __future__ import annotations

from engine import notices
from engine.clock import Clock
from engine.failures import Failure, FailureClass
from engine.models import BackendState
from engine.policy import BackendAction, backend_action, hm
from engine.routing import Router
from engine.settings import Settings
from engine.store import Store

DEFAULT_PAUSE_S = 60.0


class BackendHealth:
    def __init__(self, settings: Settings, store: Store, router: Router, clock: Clock) -> None:
        self._settings = settings
        self._store = store
        self._router = router
        self._clock = clock

    async def after_failure(self, name: str, failure: Failure) -> dict[str, BackendState]:
        """Apply the failure's backend action; return the backend states as they now are (also the router's
        cache), so the end of this run is decided on what this failure changed."""
        action = backend_action(failure.failure_class)
        if action is BackendAction.PAUSE:
            await self._pause(name, failure)
        elif action is BackendAction.BREAKER:
            await self._count_toward_breaker(name, failure)
        elif action is BackendAction.DISABLE:
            await self._disable(name, failure)
        elif action is BackendAction.FIRST_SIGHT:
            await self._first_sight(name, failure)
        elif action is BackendAction.REJECTED:
            await self._first_sight(name, failure)
            await self._count_toward_breaker(name, failure)
        self._router.states = await self._store.backend_states()
        return self._router.states

    async def after_success(self, name: str, started_at: float | None = None) -> None:
        """Reset failure counts only when there were some: a healthy backend costs no write per job. A call that
        started (``started_at``) before the backend's last recorded failure proves nothing about it now (it was in
        flight when the outage began), and recovery is announced only for a circuit announced open."""
        state = self._router.states.get(name)
        if state is None or (state.consecutive_failures == 0 and state.pause_reason != "circuit_open"):
            return
        if started_at is not None and state.updated_at is not None and started_at < state.updated_at:
            return
        await self._store.record_backend_result(name, ok=True)
        was_open = await self._store.kv_get(f"circuit:{name}") == "open"
        recovered = notices.info(f"circuit:{name}:closed:{int(self._clock.now())}", f"Backend {name} recovered.")
        await self._store.kv_set_if_changed(f"circuit:{name}", "closed", outbox=[recovered] if was_open else [])
        self._router.states = await self._store.backend_states()

    async def _pause(self, name: str, failure: Failure) -> None:
        until = failure.resume_at or (self._clock.now() + DEFAULT_PAUSE_S)
        await self._store.pause_backend(name, until, failure.failure_class.value, failure.message[:300])
        if failure.failure_class is FailureClass.QUOTA:
            await self._store.add_outbox(
                notices.alert(
                    f"quota:{name}:{int(until)}",
                    f"Backend {name} is out of quota until {hm(until)}: {failure.message[:200]}",
                )
            )

    async def _count_toward_breaker(self, name: str, failure: Failure) -> None:
        failures = await self._store.record_backend_result(name, ok=False, error=failure.message[:300])
        if failures < self._settings.engine.circuit_breaker_failures:
            return
        until = self._clock.now() + self._settings.engine.circuit_breaker_cooldown_s
        await self._store.pause_backend(name, until, "circuit_open", failure.message[:300])
        # One alert per outage: the circuit's open/closed fact changes once, however often it re-opens.
        await self._store.kv_set_if_changed(
            f"circuit:{name}",
            "open",
            outbox=[
                notices.alert(
                    f"circuit:{name}:{int(self._clock.now())}",
                    f"Backend {name} keeps failing ({failure.failure_class.value}); circuit open. Jobs continue on "
                    "the fallback chain; I will tell you when it recovers.",
                    urgent=False,
                )
            ],
        )

    async def _disable(self, name: str, failure: Failure) -> None:
        if not await self._store.disable_backend(name, "auth", failure.message[:300]):
            return  # already disabled: already alerted
        # The pulse's credential check keeps this fact: it must not alert the same dead key again.
        await self._store.kv_set_if_changed(f"credential:{name}", "failed")
        await self._store.add_outbox(
            notices.alert(
                f"auth:{name}:{int(self._clock.now())}",
                f"Backend {name} rejected its credentials ({failure.message[:200]}). It is disabled; jobs "
                "continue on fallbacks. It comes back when its credential check passes.",
            )
        )

    async def _first_sight(self, name: str, failure: Failure) -> None:
        key = failure.signature or failure.message[:80]
        text = f"New kind of failure from {name}: {failure.message[:300]}"
        if failure.failure_class is FailureClass.BACKEND_REJECTED:
            key = f"{name}:{key}"  # the same refusal from another backend is news too
            text = (f"Backend {name} refused a request for a reason of its own ({failure.message[:300]}). Jobs "
                    "continue on the fallback chain; check its model name, URL and the service behind it.")
        await self._store.kv_set_if_changed(
            f"signature:{key}", "seen", outbox=[notices.alert(f"unknown:{key}", text, urgent=False)]
        )
