"""The core every concern of the store builds on: ``StoreCore`` runs a function as one transaction (``_tx``)
or one read (``_read``) on the database's connection, and ``_transaction`` is the BEGIN IMMEDIATE ... COMMIT
around it.

Read-then-write transactions start with ``BEGIN IMMEDIATE`` (a deferred transaction that upgrades to a
write fails with SQLITE_BUSY without waiting).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from engine.clock import Clock
from engine.errors import Busy
from engine.store.db import Database, rollback

T = TypeVar("T")


class StoreCore:
    """The database and the clock, and the two ways a store method reaches them (one hop each)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def _tx(self, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run ``fn`` inside BEGIN IMMEDIATE ... COMMIT in the store's thread."""
        now = self._clock.now()

        def run(conn: sqlite3.Connection) -> T:
            with _transaction(conn):
                return fn(conn, now)

        return await self._db.call(run)

    async def _read(self, fn: Callable[[sqlite3.Connection, float], T], *, heavy: bool = False) -> T:
        """A read. ``heavy`` ones (scans for stats and listings) always run in the store's thread."""
        now = self._clock.now()

        def run(conn: sqlite3.Connection) -> T:
            try:
                return fn(conn, now)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise Busy(str(exc)) from exc
                raise

        return await self._db.call(run, inline=not heavy)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (``rollback``: only while SQLite has not done
    so itself). SQLite's errors become ``StoreError`` in ``Database.call``."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise Busy(str(exc)) from exc
        raise
    try:
        yield
        conn.execute("COMMIT")  # disk full, I/O error: raises, and nothing was written
    except BaseException:
        rollback(conn)
        raise

