"""Drill speed and targets: how long a simulated day takes, and what the shipped scenarios report.

Three tables, each with the default simulated configuration and with a configuration shaped like the seed's
(``bench/seed_config.toml``: Claude Code and Codex subscriptions first, pay-per-token APIs behind them):

1. speed: ``seed-day`` with ``jobs_per_day`` at 209, 1,000 and 5,000: wall time and CPU time of the whole drill
   (24 simulated hours plus the drain), in this process. Target: 209 a day under 60 s of wall time.
2. targets: every shipped scenario's headline numbers (completion, failed, cost per done job, alerts,
   duplicates, each incident's first failed call and first alert naming its backends).
3. ``--without`` each backend in turn (on ``quiet``): jobs failed must stay 0 while another backend could do them.

    .venv/bin/python bench/drill_bench.py            # writes bench/results/drill.md
    .venv/bin/python bench/drill_bench.py --quick    # 209 a day only, no --without table
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from pathlib import Path
from typing import Any

from engine.drill import load_scenario, run_drill, shipped
from engine.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
SEED_CONFIG = ROOT / "bench" / "seed_config.toml"
SPEED_TARGET_S = 60.0


def _configs(home: Path) -> dict[str, Settings]:
    return {"default sim": Settings(home=home), "seed-shaped": load_settings(SEED_CONFIG, home=home)}


async def _run(settings: Settings, scenario: str, *, jobs_per_day: float | None = None,
               without: list[str] | None = None) -> tuple[dict[str, Any], float]:
    loaded = load_scenario(scenario)
    if jobs_per_day is not None:
        workload = loaded.workload.model_copy(update={"jobs_per_day": jobs_per_day})
        loaded = loaded.model_copy(update={"workload": workload})
    cpu = time.process_time()
    report = await run_drill(settings, loaded, without=without)
    return report, time.process_time() - cpu


def _speed(configs: dict[str, Settings], sizes: list[int]) -> list[str]:
    lines = ["| config | jobs/day | work jobs | done | failed | wall s | CPU s | wall per 1k jobs | < 60 s? |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, settings in configs.items():
        for size in sizes:
            report, cpu = asyncio.run(_run(settings, "seed-day", jobs_per_day=size))
            wall = report["wall_s"]
            lines.append(f"| {label} | {size:,} | {report['submitted']:,} | {report['done']:,} | {report['failed']} | "
                         f"{wall:.1f} | {cpu:.1f} | {wall / report['submitted'] * 1000:.1f} | "
                         f"{'yes' if wall < SPEED_TARGET_S else '**no**'} |")
            print(lines[-1], flush=True)
    return lines


def _targets(configs: dict[str, Settings]) -> list[str]:
    lines = ["| config | scenario | submitted | done | failed | needs_human | completion | $/done job | alerts | "
             "duplicates | incidents: first failure / first alert | pulse runs | wall s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for label, settings in configs.items():
        for name in shipped():
            report, _ = asyncio.run(_run(settings, name))
            told = ", ".join(f"{i['first_failure']} / {i['first_alert']}" for i in report["incidents"]) or "—"
            lines.append(
                f"| {label} | {name} | {report['submitted']} | {report['done']} | {report['failed']} | "
                f"{report['needs_human']} | {report['completion_rate']:.1%} | {report['cost_per_job_usd']:.4f} | "
                f"{report['alerts']} | {report['duplicate_notifications']} | {told} | {report['pulse_runs']} | "
                f"{report['wall_s']:.1f} |")
            print(lines[-1], flush=True)
    return lines


def _without(configs: dict[str, Settings]) -> list[str]:
    lines = ["| config | without | done | failed | needs_human | completion | $/done job |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for label, settings in configs.items():
        for backend in [b.name for b in settings.backends]:
            report, _ = asyncio.run(_run(settings, "quiet", without=[backend]))
            lines.append(f"| {label} | {backend} | {report['done']} | {report['failed']} | {report['needs_human']} | "
                         f"{report['completion_rate']:.1%} | {report['cost_per_job_usd']:.4f} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="209 jobs a day only; no --without table")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drill.md", help="Markdown file")
    args = parser.parse_args()
    configs = _configs(Path("/nonexistent/drill-bench-home"))  # the drill makes its own temporary folder
    load = os.getloadavg()
    header = (f"Drill bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python {platform.python_version()}, "
              f"{os.cpu_count()} cores, load average at start {load[0]:.2f} / {load[1]:.2f} (1 / 5 min).")
    sections = [header, "", "## Speed: seed-day, 24 simulated hours", "",
                *_speed(configs, [209] if args.quick else [209, 1_000, 5_000]),
                "", "## Shipped scenarios", "", *_targets(configs)]
    if not args.quick:
        sections += ["", "## quiet, --without each backend", "", *_without(configs)]
    sections += ["", f"Load average at the end {os.getloadavg()[0]:.2f} (1 min)."]
    args.out.write_text("\n".join(sections) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
