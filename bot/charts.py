"""The /stats chart: throughput per day, completion rate, cost. Rendered offline with matplotlib's Agg canvas
into a PNG in memory (no display, no pyplot global state, no network)."""

from __future__ import annotations

import io
import time
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.store import Stats


def stats_chart_png(stats: Stats) -> bytes:
    days = stats.by_day
    labels = [time.strftime("%m-%d", time.gmtime(d["day"])) for d in days] or ["-"]
    done = [d["done"] for d in days] or [0]
    failed = [d["failed"] for d in days] or [0]
    rate = [(d["done"] / d["finished"] * 100) if d["finished"] else 0.0 for d in days] or [0.0]
    cost = [d["cost_usd"] for d in days] or [0.0]
    positions = list(range(len(labels)))

    figure = Figure(figsize=(7, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    throughput, completion, spend = figure.subplots(3, 1, sharex=True)
    throughput.bar(positions, done, color="#2e7d32", label="done")
    throughput.bar(positions, failed, bottom=done, color="#c62828", label="failed")
    throughput.set_ylabel("jobs / day")
    throughput.legend(loc="upper left", fontsize="small")
    throughput.set_title(f"{stats.total_jobs} jobs · {stats.completion_rate:.0%} completed · ${stats.cost_usd:.2f}")
    completion.plot(positions, rate, marker="o", color="#1565c0")
    completion.set_ylim(0, 105)
    completion.set_ylabel("completed %")
    spend.bar(positions, cost, color="#6a1b9a")
    spend.set_ylabel("cost $")
    spend.set_xticks(positions, labels, rotation=45, fontsize="small")

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def drill_chart_png(report: dict[str, Any]) -> bytes:
    """A drill over its simulated day: work jobs submitted, done and failed per hour, incidents shaded."""
    rows = report["timeline"]
    hours = [r["hour"] + 0.5 for r in rows]
    figure = Figure(figsize=(8, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for row in report["incidents"]:
        start, end = _hours(row["start"]), _hours(row["end"])
        axes.axvspan(start, min(end, len(rows)), color="#ffcc80", alpha=0.5, lw=0)
        axes.text(start, 0, f" {row['kind']}: {', '.join(row['backends'])}"[:60], rotation=90, va="bottom",
                  fontsize="x-small", color="#e65100")
    axes.step(hours, [r["submitted"] for r in rows], where="mid", color="#1565c0", label="submitted")
    axes.bar(hours, [r["done"] for r in rows], width=0.8, color="#2e7d32", alpha=0.6, label="done")
    axes.bar(hours, [r["failed"] for r in rows], width=0.8, color="#c62828", label="failed")
    axes.set_xlim(0, len(rows))
    axes.set_xlabel("simulated hour")
    axes.set_ylabel("jobs / hour")
    axes.legend(loc="upper left", fontsize="small")
    axes.set_title(f"drill {report['scenario']}: {report['done']}/{report['submitted']} done · "
                   f"{report['failed']} failed · ${report['cost_per_job_usd']:.4f}/job · "
                   f"{report['alerts']} alerts · {report['duplicate_notifications']} duplicates", fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _hours(hhmm: str) -> float:
    hours, _, minutes = hhmm.partition(":")
    return int(hours) + int(minutes) / 60
