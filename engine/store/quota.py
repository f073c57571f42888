"""Subscription usage windows (``quota_windows``), and the facts quota-aware routing reads from the jobs: how
big a typical run of a job type is, and whether the operator's own work is waiting."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from engine.models import NewOutbox
from engine.quota import JobSize, QuotaWindow
from engine.store.core import StoreCore
from engine.store.writes import _add_outbox

# Given a plan's windows by kind and now: the windows to write and the messages their change causes.
WindowChange = Callable[[dict[str, QuotaWindow], float], tuple[list[QuotaWindow], list[NewOutbox]]]
# A typical run is read from this many recent successful runs of the type.
SIZE_SAMPLE = 50
SIZE_PERCENTILE = 0.75  # a long-ish run, not the median: a job cut off mid-way costs more than one moved


class QuotaMixin(StoreCore):
    """The ``Store`` methods on quota windows."""

    async def quota_windows(self) -> list[QuotaWindow]:
        sql = "SELECT * FROM quota_windows ORDER BY plan, kind"
        return await self._read(lambda conn, _: [_window(r) for r in conn.execute(sql)])

    async def update_quota_windows(self, plan: str, change: WindowChange) -> list[QuotaWindow]:
        """Read ``plan``'s windows, apply ``change`` (a pure function: the windows by kind and now -> the
        windows to write and the messages to queue) and write the result, in one transaction."""

        def run(conn: sqlite3.Connection, now: float) -> list[QuotaWindow]:
            rows = conn.execute("SELECT * FROM quota_windows WHERE plan = ?", (plan,)).fetchall()
            windows, messages = change({w.kind: w for w in map(_window, rows)}, now)
            for w in windows:
                _save(conn, w, now)
            for message in messages:
                _add_outbox(conn, message, now)
            return windows

        return await self._tx(run)

    async def typical_run(self, job_type: str) -> JobSize:
        """Tokens and seconds of a long-ish successful run of ``job_type`` (None: no history yet)."""
        sql = (
            "SELECT a.tokens_in + a.tokens_out + a.cache_write AS tokens, a.finished_at - a.started_at AS took "
            "FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE j.type = ? AND a.purpose = 'make' "
            "AND a.outcome = 'success' AND a.finished_at IS NOT NULL ORDER BY a.id DESC LIMIT ?"
        )

        def run(conn: sqlite3.Connection, _: float) -> JobSize:
            rows = conn.execute(sql, (job_type, SIZE_SAMPLE)).fetchall()
            if not rows:
                return JobSize()
            return JobSize(int(_percentile([r["tokens"] for r in rows])), _percentile([r["took"] for r in rows]))

        return await self._read(run)

    async def operator_work_waiting(self) -> int:
        """Operator-priority jobs queued, waiting for a backend or running."""
        sql = ("SELECT COUNT(*) FROM jobs WHERE priority = 0 "
               "AND state IN ('queued', 'snoozed', 'retry_wait', 'running')")
        return await self._read(lambda conn, _: int(conn.execute(sql).fetchone()[0]))


def _percentile(values: list[float]) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * SIZE_PERCENTILE))])


_COLUMNS = ("plan", "kind", "status", "resets_at", "utilization", "started_at", "used_tokens", "runs", "moved",
            "deferred", "exhaustions", "base_share", "base_tokens", "updated_at")
_UPSERT = (
    f"INSERT INTO quota_windows({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    "ON CONFLICT(plan, kind) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:])
)


def _save(conn: sqlite3.Connection, w: QuotaWindow, now: float) -> None:
    values = w.model_dump(mode="json") | {"exhaustions": json.dumps(w.exhaustions), "updated_at": w.updated_at or now}
    conn.execute(_UPSERT, tuple(values[c] for c in _COLUMNS))


def _window(row: sqlite3.Row) -> QuotaWindow:
    values = dict(row)
    values["exhaustions"] = json.loads(values["exhaustions"] or "[]")
    return QuotaWindow(**values)
