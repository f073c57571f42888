"""The /stats chart: throughput per day, completion rate, cost. Rendered offline with matplotlib's Agg canvas
into a PNG in memory (no display, no pyplot global state, no network)."""

from __future__ import annotations

import io
import time

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
