"""Key/value facts (``kv``), whose change is announced through the outbox in the same transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from engine.models import NewOutbox
from engine.store.core import StoreCore
from engine.store.writes import _add_outbox


class KvMixin(StoreCore):
    """The ``Store`` methods on key/value facts."""

    async def kv_get(self, key: str) -> str | None:
        sql = "SELECT value FROM kv WHERE key = ?"
        return await self._read(lambda conn, _: row[0] if (row := conn.execute(sql, (key,)).fetchone()) else None)

    async def kv_set_if_changed(self, key: str, value: str, outbox: Iterable[NewOutbox] = ()) -> bool:
        """Set a fact; when it changed, also queue the given messages (same transaction). True if changed."""
        messages = list(outbox)

        def run(conn: sqlite3.Connection, now: float) -> bool:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] == value:
                return False
            conn.execute(
                "INSERT INTO kv(key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, now),
            )
            for message in messages:
                _add_outbox(conn, message, now)
            return True

        return await self._tx(run)

    async def kv_claim(self, key: str, value: str) -> bool:
        """Set ``key`` only if it is not set yet: True for the one caller that set it (an idempotency key)."""

        def run(conn: sqlite3.Connection, now: float) -> bool:
            cur = conn.execute(
                "INSERT INTO kv(key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO NOTHING", (key, value, now)
            )
            return cur.rowcount == 1

        return await self._tx(run)

    async def kv_put(self, key: str, value: str) -> None:
        def run(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "INSERT INTO kv(key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, now),
            )

        await self._tx(run)

    async def kv_add(self, key: str, amount: float) -> float:
        """Add ``amount`` to a numeric fact (absent: 0) in one transaction; return the new value."""

        def run(conn: sqlite3.Connection, now: float) -> float:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            try:
                value = float(row[0]) + amount if row is not None else amount
            except ValueError:
                value = amount
            conn.execute(
                "INSERT INTO kv(key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, repr(value), now),
            )
            return value

        return await self._tx(run)
