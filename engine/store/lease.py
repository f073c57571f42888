"""The engine lease: one engine per data folder, held in the database (``engine_lease``, one row).

The lock file guards against a second start by mistake, but a deleted lock file guards nothing: a second
engine's start-up sweep would take over the first one's running jobs and run them twice. So an engine takes
this row before its sweep and renews it with its liveness heartbeat. It can be taken over only when it has
expired, or when its holder certainly no longer runs (``engine.process.is_gone``: a crash need not wait for
the expiry). An engine whose renewal fails has lost it and must start no more jobs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from pydantic import BaseModel

from engine.process import ProcessId
from engine.store.core import StoreCore


class EngineLease(BaseModel):
    owner: str
    host: str
    pid: int
    pid_started: str | None
    acquired_at: float
    expires_at: float

    @property
    def process(self) -> ProcessId:
        return ProcessId(self.host, self.pid, self.pid_started)


class LeaseMixin(StoreCore):
    """The ``Store`` methods on the engine lease."""

    async def engine_lease_acquire(
        self, owner: str, me: ProcessId, ttl_s: float, *, gone: Callable[[ProcessId], bool]
    ) -> EngineLease | None:
        """Take the lease for ``owner``. Returns None when taken, or the live holder that keeps it."""

        def run(conn: sqlite3.Connection, now: float) -> EngineLease | None:
            holder = _lease(conn)
            if holder is not None and holder.owner != owner and holder.expires_at > now and not gone(holder.process):
                return holder
            conn.execute(
                "INSERT OR REPLACE INTO engine_lease(id, owner, host, pid, pid_started, acquired_at, expires_at) "
                "VALUES (1, ?, ?, ?, ?, ?, ?)",
                (owner, me.host, me.pid, me.started, now, now + ttl_s),
            )
            return None

        return await self._tx(run)

    async def engine_lease_renew(self, owner: str, ttl_s: float) -> bool:
        """Extend the lease. False when ``owner`` no longer holds it (another engine took it over)."""
        sql = "UPDATE engine_lease SET expires_at = ? WHERE id = 1 AND owner = ?"
        return await self._tx(lambda conn, now: conn.execute(sql, (now + ttl_s, owner)).rowcount == 1)

    async def engine_lease_release(self, owner: str) -> None:
        await self._tx(lambda conn, _: conn.execute("DELETE FROM engine_lease WHERE owner = ?", (owner,)))

    async def engine_lease(self) -> EngineLease | None:
        return await self._read(lambda conn, _: _lease(conn))


def _lease(conn: sqlite3.Connection) -> EngineLease | None:
    row = conn.execute("SELECT owner, host, pid, pid_started, acquired_at, expires_at FROM engine_lease").fetchone()
    return EngineLease(**dict(row)) if row is not None else None
