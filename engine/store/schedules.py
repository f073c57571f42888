"""Schedules: add, list and remove them, and fire one (advance it and enqueue its runs in one transaction,
fenced on its slot)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from engine.models import Job, NewJob, NewOutbox, Schedule
from engine.store.core import StoreCore
from engine.store.rows import _schedule
from engine.store.writes import _add_event, _add_outbox, _enqueue


class SchedulesMixin(StoreCore):
    """The ``Store`` methods on schedules."""

    async def add_schedule(
        self,
        name: str,
        job_type: str,
        prompt: str,
        *,
        next_run_at: float,
        interval_s: float | None = None,
        daily_at: str | None = None,
        project: str | None = None,
        catch_up: bool = True,
    ) -> Schedule:
        def run(conn: sqlite3.Connection, now: float) -> Schedule:
            cur = conn.execute(
                "INSERT INTO schedules(name, job_type, prompt, project, interval_s, daily_at, catch_up, "
                "next_run_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, job_type, prompt, project, interval_s, daily_at, int(catch_up), next_run_at, now),
            )
            return _schedule(conn.execute("SELECT * FROM schedules WHERE id = ?", (cur.lastrowid,)).fetchone())

        try:
            return await self._tx(run)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"a schedule named {name!r} already exists") from exc

    async def list_schedules(self) -> list[Schedule]:
        sql = "SELECT * FROM schedules ORDER BY id"
        return await self._read(lambda conn, _: [_schedule(r) for r in conn.execute(sql)])

    async def remove_schedule(self, name_or_id: str) -> bool:
        return await self._tx(
            lambda conn, _: (
                conn.execute(
                    "DELETE FROM schedules WHERE name = ? OR CAST(id AS TEXT) = ?", (name_or_id, name_or_id)
                ).rowcount
                > 0
            )
        )

    async def fire_schedule(
        self,
        schedule_id: int,
        expected_next_run_at: float,
        new_next_run_at: float,
        jobs: list[NewJob],
        missed: int = 0,
        outbox: Iterable[NewOutbox] = (),
        missed_note: str = "",
    ) -> list[Job]:
        """Advance a schedule and enqueue its run(s) in one transaction, fenced on next_run_at so a
        schedule never fires twice for the same slot. ``outbox`` messages are written only when it fires."""
        messages = list(outbox)

        def run(conn: sqlite3.Connection, now: float) -> list[Job]:
            cur = conn.execute(
                "UPDATE schedules SET last_run_at = ?, next_run_at = ? WHERE id = ? AND next_run_at = ?",
                (now, new_next_run_at, schedule_id, expected_next_run_at),
            )
            if cur.rowcount != 1:
                return []
            if missed:
                _add_event(
                    conn,
                    None,
                    now,
                    "schedule_missed",
                    None,
                    None,
                    f"schedule {schedule_id}: {missed} run(s) missed while down{missed_note}",
                    {"schedule_id": schedule_id, "missed": missed, "slot": expected_next_run_at},
                )
            for message in messages:
                _add_outbox(conn, message, now)
            return [_enqueue(conn, new, now)[0] for new in jobs]

        return await self._tx(run)
