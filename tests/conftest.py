"""Shared fixtures: settings on tmp_path with instant simulated backends, a store on a real SQLite file, and an
engine factory. Time is a ``FakeClock`` unless a test asks for the system clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from engine.backends.base import Backend
from engine.backends.sim import SimBackend
from engine.clock import Clock, FakeClock
from engine.loop import Engine
from engine.settings import BackendConfig, Settings, default_sim_backends
from engine.store import Store
from tests.fakes.scenario import wait_for


def instant(configs: Iterable[BackendConfig], **sim: Any) -> list[BackendConfig]:
    """Copies of ``configs`` whose simulation answers at once (and with any other profile values given)."""
    return [c.model_copy(update={"sim": c.sim.model_copy(update={"latency_ms": 0.0, **sim})}) for c in configs]


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """``make_settings(backends=..., engine={...}, **other)``: Settings with data under tmp_path/home."""

    def make(backends: list[BackendConfig] | None = None, **overrides: Any) -> Settings:
        return Settings(home=tmp_path / "home", backends=backends or instant(default_sim_backends()), **overrides)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(settings: Settings, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await Store.open(settings.db_path, clock)
    yield opened
    await opened.close()


def sim_backends(settings: Settings, clock: Clock) -> dict[str, Backend]:
    return {c.name: SimBackend(c, clock=clock) for c in settings.backends}


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., Any]]:
    """``await make_engine(settings, store, clock, backends=None, hooks=None)``: a started Engine, stopped at
    teardown. ``backends`` defaults to a SimBackend for every configured backend; other keywords go to Engine."""
    engines: list[Engine] = []

    async def make(
        settings: Settings, store: Store, clock: Clock, backends: dict[str, Backend] | None = None, **engine_kw: Any
    ) -> Engine:
        backends = backends if backends is not None else sim_backends(settings, clock)
        engine = Engine(settings, store, backends, clock, **engine_kw)
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        if not engine._stopping.is_set():
            await engine.stop(grace_s=0)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """``await eventually(async_check, timeout_s=30)``: poll until the check returns something truthy."""

    async def wait(check: Callable[[], Awaitable[Any]], timeout_s: float = 30.0) -> Any:
        return await wait_for(check, timeout_s)

    return wait
