"""``switchboard drill SCENARIO``: replay a day of workload and incidents in virtual time and report.

The drill runs the real engine on simulated twins of the configured backends in a fresh temporary data folder
(never the operator's); see ``engine.drill``. With ``--json`` stdout carries the report as one JSON document.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli_common import CommandSpec, emit, json_flag

if TYPE_CHECKING:  # annotations only: registering the command loads neither the settings nor the engine
    from engine.settings import Settings


def commands() -> dict[str, CommandSpec]:
    return {"drill": ("replay a day of workload and incidents on simulated twins", _build)}


def _build(drill: argparse.ArgumentParser) -> None:
    drill.add_argument("scenario", help="a shipped scenario (seed-day, oauth-expiry, rate-limit-storm, "
                                        "provider-gone, quiet, subscription-wall) or a path to a scenario .toml")
    drill.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    drill.add_argument("--without", action="append", default=[], metavar="BACKEND",
                       help="remove this backend from the configuration, as if its provider were gone (repeatable)")
    drill.add_argument("--chart", metavar="FILE", help="write a PNG of jobs and incidents over the simulated day")
    json_flag(drill).set_defaults(func=_drill)


async def _drill(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from engine.drill import load_scenario, report_text, run_drill

    report = await run_drill(settings, load_scenario(args.scenario), seed=args.seed, without=args.without)
    text = report_text(report)
    if args.chart:
        from bot.charts import drill_chart_png  # matplotlib only when a chart is asked for

        await asyncio.to_thread(Path(args.chart).write_bytes, drill_chart_png(report))
        text += f"\nchart: {args.chart}"
    emit(args, report, text)
    return 0
