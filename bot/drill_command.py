"""``/drill NAME`` from chat: run a shipped drill in the background, then send its report and chart.

The drill runs in this process on its own temporary data folder, store, engine and simulated twins (see
``engine.drill``); the live engine and its data are not touched. The answer to the command comes at once; the
report follows through the outbox (to every operator), with the chart saved under ``$SWITCHBOARD_HOME/drills/``
and attached as a picture. Only shipped scenarios are accepted from chat (no file paths), one drill at a time.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from engine.errors import ConfigError, describe_error

if TYPE_CHECKING:
    from engine.control import Control
    from engine.drill import Scenario

log = logging.getLogger(__name__)


class DrillCommand:
    def __init__(self, control: Control) -> None:
        self._control = control
        self._running: asyncio.Task[None] | None = None

    async def start(self, args: str) -> str:
        from engine.drill import load_scenario, shipped

        name = args.split()[0] if args.split() else ""
        if name not in shipped():
            return f"Which drill? /drill NAME, one of: {', '.join(shipped())}"
        if self._running is not None and not self._running.done():
            return "A drill is already running; its report comes when it is done."
        try:
            scenario = load_scenario(name)
        except ConfigError as exc:
            return f"Cannot do that: {describe_error(exc)}"
        self._running = asyncio.create_task(self._run(scenario), name=f"drill-{name}")
        return (f"Drill {name} started: {scenario.hours:g} simulated hours on simulated twins of your backends. "
                "The report and its chart follow when it is done.")

    async def wait(self) -> None:
        """Until the drill started last has sent its report (tests, shutdown)."""
        if self._running is not None:
            await self._running

    async def _run(self, scenario: Scenario) -> None:
        from engine.drill import report_text, run_drill

        control = self._control
        key = f"drill:{scenario.name}:{uuid.uuid4().hex[:12]}"
        try:
            report = await run_drill(control.settings, scenario)
            payload: dict[str, object] = {}
            try:
                payload["photo_path"] = str(await asyncio.to_thread(self._chart, report, key))
            except Exception as exc:  # the numbers still go out without their picture
                log.warning("drill %s: no chart (%s)", scenario.name, describe_error(exc))
            await control.reply(key, None, report_text(report), payload)
        except Exception as exc:
            log.exception("drill %s failed", scenario.name)
            await control.reply(key, None, f"Drill {scenario.name} failed: {describe_error(exc)}")

    def _chart(self, report: dict[str, object], key: str) -> str:
        from bot.charts import drill_chart_png  # matplotlib: loaded by the first chart

        folder = self._control.settings.home / "drills"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{key.replace(':', '-')}.png"
        path.write_bytes(drill_chart_png(report))
        return str(path)
