"""Numbers: capacity and money (tokens, spend, queue depth), ``stats`` with the quality gate's
``ReviewStats``, and the daily digest's facts."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.store.core import StoreCore

_SECONDS_PER_DAY = 86_400.0


def saved_key(now: float) -> str:
    """The kv fact holding this UTC month's list-price total of subscription runs (what the subscription saved)."""
    return "saved_usd:" + time.strftime("%Y-%m", time.gmtime(now))


class ReviewStats(BaseModel):
    """The quality gate's numbers. Deterministic-check rejections are counted apart from model reviews."""
    model_config = ConfigDict(defer_build=True)  # built on first use: the CLI's commands import it

    reviews: int = 0
    first_drafts: int = 0
    catch_rate: float = 0.0  # share of first drafts the reviewer rejected
    pass_rate_by_maker_family: dict[str, float] = Field(default_factory=dict)
    mean_score_by_reviewer_family: dict[str, float] = Field(default_factory=dict)
    revisions_per_job: float = 0.0
    check_rejections: int = 0


# The jobs the operator counts: chat turns and review jobs are reported on their own lines (their cost is still in
# the total, so the cost per job is what a job of the operator's really costs, reviews and chat included).
_VISIBLE = "type NOT IN ('chat', 'review')"


class Stats(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use: the CLI's commands import it

    since: float
    total_jobs: int  # operator-visible jobs: not chat turns, not reviews
    done: int
    failed: int
    cancelled: int
    active: int
    completion_rate: float
    active_projects: int
    peak_daily: int
    average_daily: float
    cost_usd: float
    cost_per_job: float
    tokens_in: int
    tokens_out: int
    by_day: list[dict[str, Any]]
    reviews: ReviewStats = Field(default_factory=ReviewStats)
    # Messages whose send timed out after the request went out: they may or may not have arrived, and were
    # not sent again (bot/telegram/sender.py).
    uncertain_sends: int = 0
    chat_turns: int = 0
    chat_cost_usd: float = 0.0
    # The persona's input tokens: uncached, read from the prompt cache, written to it; and the turns that read
    # from the cache (a warm session) against those that did not.
    chat_tokens_in: int = 0
    chat_cache_read: int = 0
    chat_cache_write: int = 0
    chat_warm_turns: int = 0
    review_jobs: int = 0
    review_cost_usd: float = 0.0
    simulated_cost_usd: float = 0.0  # of cost_usd: spent by simulated backends, not real money


class StatsMixin(StoreCore):
    """The ``Store`` methods that count: capacity and money, statistics, the digest."""

    # ---- capacity and money -----------------------------------------------------------------------

    async def tokens_since(self, since: float) -> int:
        sql = "SELECT COALESCE(SUM(tokens_in + tokens_out), 0) FROM attempts WHERE finished_at >= ?"
        return await self._read(lambda conn, _: conn.execute(sql, (since,)).fetchone()[0])

    async def spend_since(self, since: float, backends: Iterable[str] | None = None) -> float:
        names = list(backends) if backends is not None else None
        sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts WHERE finished_at >= ?"
        params: list[Any] = [since]
        if names is not None:
            if not names:
                return 0.0
            sql += f" AND backend IN ({','.join('?' * len(names))})"
            params += names
        return await self._read(lambda conn, _: float(conn.execute(sql, params).fetchone()[0]))

    async def queue_depth(self, cap: int = 1_000_000) -> int:
        """Jobs ready to run now, counted up to ``cap`` (counting stops there: the loop asks this often)."""
        sql = "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE state = 'queued' AND run_after <= ? LIMIT ?)"
        return await self._read(lambda conn, now: conn.execute(sql, (now, cap)).fetchone()[0])

    # ---- statistics -------------------------------------------------------------------------------

    async def stats(self, since: float, simulated: Iterable[str] = ()) -> Stats:
        """``simulated``: the names of the simulated backends, whose spend is reported apart."""
        names = list(simulated)
        return await self._read(lambda conn, now: _stats(conn, since, now, names), heavy=True)

    async def digest_numbers(self, since: float, *, list_limit: int = 20) -> dict[str, Any]:
        """The daily digest's facts for jobs created since ``since`` (the same window as ``stats``): done and
        failed jobs (with why), failure classes, attempts per backend, and what waits for the operator."""
        return await self._read(lambda conn, _: _digest_numbers(conn, since, list_limit))


def _stats(conn: sqlite3.Connection, since: float, now: float, simulated: list[str]) -> Stats:
    row = conn.execute(
        f"SELECT SUM({_VISIBLE}), SUM({_VISIBLE} AND state = 'done'), SUM({_VISIBLE} AND state = 'failed'), "
        f"SUM({_VISIBLE} AND state = 'cancelled'), "
        f"SUM({_VISIBLE} AND state NOT IN ('done', 'failed', 'cancelled')), COALESCE(SUM(cost_usd), 0), "
        "COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), SUM(type = 'chat'), "
        "COALESCE(SUM(CASE WHEN type = 'chat' THEN cost_usd END), 0), SUM(type = 'review'), "
        "COALESCE(SUM(CASE WHEN type = 'review' THEN cost_usd END), 0) FROM jobs WHERE created_at >= ?",
        (since,),
    ).fetchone()
    total, done, failed, cancelled, active, cost, tin, tout, chats, chat_cost, reviews, review_cost = (
        v or 0 for v in row
    )
    days = conn.execute(
        f"SELECT CAST(finished_at / ? AS INTEGER) AS day, SUM({_VISIBLE}), SUM({_VISIBLE} AND state = 'done'), "
        f"SUM({_VISIBLE} AND state = 'failed'), COALESCE(SUM(cost_usd), 0) FROM jobs WHERE finished_at >= ? "
        "GROUP BY day ORDER BY day",
        (_SECONDS_PER_DAY, since),
    ).fetchall()
    by_day = [
        {
            "day": int(d[0] * _SECONDS_PER_DAY),
            "finished": d[1] or 0,
            "done": d[2] or 0,
            "failed": d[3] or 0,
            "cost_usd": d[4],
        }
        for d in days
    ]
    span_days = max(1.0, (now - since) / _SECONDS_PER_DAY)
    finished = done + failed
    projects = conn.execute("SELECT COUNT(*) FROM projects WHERE status = 'active'").fetchone()[0]
    return Stats(
        since=since,
        total_jobs=total,
        done=done,
        failed=failed,
        cancelled=cancelled,
        active=active,
        completion_rate=(done / finished) if finished else 0.0,
        active_projects=projects,
        peak_daily=max((d["done"] for d in by_day), default=0),
        average_daily=done / span_days,
        cost_usd=cost,
        cost_per_job=(cost / done) if done else 0.0,
        tokens_in=tin,
        tokens_out=tout,
        by_day=by_day,
        reviews=_review_stats(conn, since),
        uncertain_sends=conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE state = 'uncertain' AND created_at >= ?", (since,)
        ).fetchone()[0],
        chat_turns=chats,
        chat_cost_usd=chat_cost,
        **_chat_tokens(conn, since),
        review_jobs=reviews,
        review_cost_usd=review_cost,
        simulated_cost_usd=_spent_by(conn, since, simulated),
    )


def _chat_tokens(conn: sqlite3.Connection, since: float) -> dict[str, int]:
    """The persona turns' input tokens by cache use (their attempts), for the chat jobs created since ``since``."""
    row = conn.execute(
        "SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(cache_read), 0), COALESCE(SUM(cache_write), 0), "
        "COUNT(DISTINCT CASE WHEN cache_read > 0 THEN job_id END) FROM attempts WHERE job_id IN "
        "(SELECT id FROM jobs WHERE type = 'chat' AND created_at >= ?)",
        (since,),
    ).fetchone()
    return {"chat_tokens_in": row[0], "chat_cache_read": row[1], "chat_cache_write": row[2],
            "chat_warm_turns": row[3]}


def _spent_by(conn: sqlite3.Connection, since: float, backends: list[str]) -> float:
    """What the jobs created since ``since`` spent on ``backends`` (by their attempts)."""
    if not backends:
        return 0.0
    sql = (f"SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a JOIN jobs j ON j.id = a.job_id "
           f"WHERE j.created_at >= ? AND a.backend IN ({','.join('?' * len(backends))})")
    return float(conn.execute(sql, (since, *backends)).fetchone()[0])


def _review_stats(conn: sqlite3.Connection, since: float) -> ReviewStats:
    checks = "deterministic-checks"
    rows = conn.execute(
        "SELECT revision, passed, maker_family, reviewer_family, score FROM reviews "
        "WHERE created_at >= ? AND reviewer_family <> ?",
        (since, checks),
    ).fetchall()
    first = [r for r in rows if r[0] == 0]
    by_maker: dict[str, list[int]] = {}
    by_reviewer: dict[str, list[float]] = {}
    for _, passed, maker, reviewer, score in rows:
        by_maker.setdefault(maker, []).append(passed)
        by_reviewer.setdefault(reviewer, []).append(score)
    revisions = conn.execute(
        "SELECT AVG(revision) FROM jobs WHERE review_required = 1 AND finished_at >= ?", (since,)
    ).fetchone()[0]
    rejected_by_checks = conn.execute(
        "SELECT COUNT(*) FROM reviews WHERE created_at >= ? AND reviewer_family = ?", (since, checks)
    ).fetchone()[0]
    return ReviewStats(
        reviews=len(rows),
        first_drafts=len(first),
        catch_rate=sum(1 for r in first if not r[1]) / len(first) if first else 0.0,
        pass_rate_by_maker_family={k: sum(v) / len(v) for k, v in sorted(by_maker.items())},
        mean_score_by_reviewer_family={k: sum(v) / len(v) for k, v in sorted(by_reviewer.items())},
        revisions_per_job=float(revisions or 0.0),
        check_rejections=rejected_by_checks,
    )


def _digest_numbers(conn: sqlite3.Connection, since: float, limit: int) -> dict[str, Any]:
    def rows(sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [dict(r) for r in conn.execute(sql, params)]

    columns = "id, type, title, cost_usd, maker_backend, last_failure_class, last_error, finished_at"
    done, failed = (
        rows(f"SELECT {columns} FROM jobs WHERE created_at >= ? AND state = ? AND {_VISIBLE} ORDER BY id LIMIT ?",
             (since, s, limit))
        for s in ("done", "failed")
    )
    failure_classes = {
        r[0] or "unknown": r[1]
        for r in conn.execute(
            f"SELECT last_failure_class, COUNT(*) FROM jobs WHERE created_at >= ? AND state = 'failed' AND {_VISIBLE} "
            "GROUP BY last_failure_class ORDER BY COUNT(*) DESC",
            (since,),
        )
    }
    waiting = rows(
        "SELECT id, type, title, state, progress FROM jobs WHERE state IN ('needs_input', 'needs_human') "
        "ORDER BY id LIMIT ?",
        (limit,),
    )
    waiting_total = conn.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('needs_input', 'needs_human')").fetchone()[
        0
    ]
    backends = rows(
        "SELECT backend, COUNT(*) AS calls, SUM(outcome = 'success') AS ok, COALESCE(SUM(cost_usd), 0) AS cost_usd "
        "FROM attempts WHERE started_at >= ? GROUP BY backend ORDER BY calls DESC",
        (since,),
    )
    # When non-urgent messages were written: the caller counts those that fell in quiet hours (held for it).
    non_urgent = [
        r[0] for r in conn.execute("SELECT created_at FROM outbox WHERE urgent = 0 AND created_at >= ?", (since,))
    ]
    return {
        "done_jobs": done,
        "failed_jobs": failed,
        "failure_classes": failure_classes,
        "waiting_jobs": waiting,
        "waiting_total": waiting_total,
        "backends": backends,
        "non_urgent_message_times": non_urgent,
    }
