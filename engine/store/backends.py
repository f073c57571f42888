"""Backend state, the rate-limit cache: pauses (429 resets), the circuit breaker's consecutive failures,
and backends disabled for their credentials. Kept in ``backend_state`` so it survives restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from engine.models import BackendState, NewOutbox
from engine.store.core import StoreCore
from engine.store.rows import _backend_state
from engine.store.writes import _add_outbox


class BackendsMixin(StoreCore):
    """The ``Store`` methods on ``backend_state``."""

    async def backend_states(self) -> dict[str, BackendState]:
        sql = "SELECT * FROM backend_state"
        return await self._read(lambda conn, _: {r["name"]: _backend_state(r) for r in conn.execute(sql)})

    async def pause_backend(self, name: str, until: float, reason: str, error: str | None = None) -> BackendState:
        """Pause a backend until ``until``. A later pause never shortens an earlier one."""

        def run(conn: sqlite3.Connection, now: float) -> BackendState:
            _ensure_backend(conn, name, now)
            conn.execute(
                "UPDATE backend_state SET paused_until = MAX(COALESCE(paused_until, 0), ?), "
                "pause_reason = CASE WHEN COALESCE(paused_until, 0) > ? THEN pause_reason ELSE ? END, "
                "last_error = COALESCE(?, last_error), updated_at = ? WHERE name = ?",
                (until, until, reason, error, now, name),
            )
            return _backend_state(conn.execute("SELECT * FROM backend_state WHERE name = ?", (name,)).fetchone())

        return await self._tx(run)

    async def resume_backend(self, name: str) -> None:
        await self._tx(
            lambda conn, now: _update_backend(
                conn, name, now, paused_until=None, pause_reason=None, disabled=0, consecutive_failures=0
            )
        )

    async def disable_backend(self, name: str, reason: str, error: str | None = None) -> bool:
        """Disable (auth failures). True when this call disabled it (so the alert goes out once)."""

        def run(conn: sqlite3.Connection, now: float) -> bool:
            _ensure_backend(conn, name, now)
            cur = conn.execute(
                "UPDATE backend_state SET disabled = 1, pause_reason = ?, last_error = ?, updated_at = ? "
                "WHERE name = ? AND disabled = 0",
                (reason, error, now, name),
            )
            return cur.rowcount == 1

        return await self._tx(run)

    async def record_backend_result(self, name: str, ok: bool, error: str | None = None) -> int:
        """Count consecutive failures (for the circuit breaker). Returns the new count."""

        def run(conn: sqlite3.Connection, now: float) -> int:
            _ensure_backend(conn, name, now)
            if ok:  # a success closes an open circuit whose pause has run out
                conn.execute(
                    "UPDATE backend_state SET consecutive_failures = 0, last_ok_at = ?, updated_at = ?, "
                    "pause_reason = CASE WHEN pause_reason = 'circuit_open' AND COALESCE(paused_until, 0) <= ? "
                    "THEN NULL ELSE pause_reason END WHERE name = ?",
                    (now, now, now, name),
                )
                return 0
            conn.execute(
                "UPDATE backend_state SET consecutive_failures = consecutive_failures + 1, last_error = ?, "
                "updated_at = ? WHERE name = ?",
                (error, now, name),
            )
            row = conn.execute("SELECT consecutive_failures FROM backend_state WHERE name = ?", (name,)).fetchone()
            return int(row[0])

        return await self._tx(run)

    async def reenable_backend(self, name: str, outbox: Iterable[NewOutbox] = ()) -> bool:
        """Re-enable a backend disabled for its credentials, with its announcement in the same transaction.
        True only for the call that re-enabled it (so recovery is announced once)."""
        messages = list(outbox)

        def run(conn: sqlite3.Connection, now: float) -> bool:
            cur = conn.execute(
                "UPDATE backend_state SET disabled = 0, pause_reason = NULL, consecutive_failures = 0, "
                "last_ok_at = ?, updated_at = ? WHERE name = ? AND disabled = 1",
                (now, now, name),
            )
            if cur.rowcount != 1:
                return False
            for message in messages:
                _add_outbox(conn, message, now)
            return True

        return await self._tx(run)


def _ensure_backend(conn: sqlite3.Connection, name: str, now: float) -> None:
    conn.execute("INSERT OR IGNORE INTO backend_state(name, updated_at) VALUES (?, ?)", (name, now))


def _update_backend(conn: sqlite3.Connection, name: str, now: float, **values: Any) -> None:
    _ensure_backend(conn, name, now)
    assignments = ", ".join(f"{key} = ?" for key in values)
    conn.execute(
        f"UPDATE backend_state SET {assignments}, updated_at = ? WHERE name = ?", (*values.values(), now, name)
    )
