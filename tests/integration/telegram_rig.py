"""A running Telegram channel on the fake Bot API over the services the composition root builds (shared by the
Telegram integration tests; the ``telegram_rigs`` fixture in conftest hands out a ``TelegramRigs``)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.app import open_services
from bot.telegram import TelegramChannel
from engine.backends.registry import build_backend
from engine.clock import FakeClock
from engine.control import Control
from engine.models import Job
from engine.settings import BackendConfig, Settings, default_sim_backends
from engine.store import Store
from tests.conftest import instant, sim_backends
from tests.fakes.fake_telegram import FakeTelegram

OPERATOR = 4242


@dataclass
class Rig:
    fake: FakeTelegram
    settings: Settings
    store: Store
    clock: FakeClock
    control: Control
    channel: TelegramChannel

    async def outbox_state(self, dedupe_key: str) -> str:
        rows = [m for m in await self.store.outbox_all() if m.dedupe_key == dedupe_key]
        return rows[0].state

    async def job(self, job_id: int) -> Job:
        job = await self.store.get_job(job_id)
        assert job is not None
        return job


class TelegramRigs:
    """Starts rigs with data under ``home`` on one clock; ``aclose`` stops and closes them, newest first."""

    def __init__(self, home: Path, clock: FakeClock) -> None:
        self._home = home
        self._clock = clock
        self._opened = contextlib.AsyncExitStack()

    async def start(
        self,
        *,
        http: bool = False,
        engine: bool = False,
        telegram: dict[str, Any],
        settings: dict[str, Any] | None = None,
        poll_timeout_s: float,
        live_tick_s: float,
        extra_backends: list[BackendConfig] | None = None,
    ) -> Rig:
        """A channel polling the fake, over its real HTTP adapter (``http``) or its in-process request objects;
        with the engine on simulated backends when ``engine``. ``telegram`` and ``settings`` add to the Settings;
        ``extra_backends`` (real HTTP backends pointed at a fake, say) are configured beside the simulated ones."""
        fake = FakeTelegram(http=http)
        self._opened.push_async_callback(fake.aclose)
        api = {"api_base_url": (await fake.start_http()).removesuffix("/bot")} if http else {}
        config = Settings(
            home=self._home,
            backends=instant(default_sim_backends()) + list(extra_backends or []),
            telegram={"operator_ids": [OPERATOR], "bot_token": fake.token, **api, **telegram},
            **(settings or {}),
        )
        backends = None
        if engine:
            sims = [c for c in config.backends if c.kind == "sim"]
            backends = sim_backends(config.model_copy(update={"backends": sims}), self._clock)
            backends |= {c.name: build_backend(c, clock=self._clock) for c in config.backends if c.kind != "sim"}
        services = await self._opened.enter_async_context(
            open_services(config, clock=self._clock, engine=engine, backends=backends)
        )
        channel = TelegramChannel(
            services,
            request=None if http else fake.request(),
            get_updates_request=None if http else fake.request(),
            limiter_retries=0,  # flood waits surface to the sender, which waits on the injected clock
            poll_timeout_s=poll_timeout_s,
            sender_poll_s=0.01,
            live_tick_s=live_tick_s,
        )
        await self._run(channel)
        await fake.wait_for_calls("getUpdates", 1)
        return Rig(fake, config, services.store, self._clock, services.control, channel)

    async def _run(self, channel: TelegramChannel) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(channel.run(stop))

        async def stop_channel() -> None:
            stop.set()
            await asyncio.wait_for(task, 10)

        self._opened.push_async_callback(stop_channel)

    async def aclose(self) -> None:
        await self._opened.aclose()
