"""The SQLite connection: one writer connection, used by whole-transaction functions.

Why not a statement-per-await driver: every await is a thread round trip (about 90 µs, and 200 µs with a
busy event loop), which caps a job queue near 1,000 jobs a second. Here a whole transaction is one plain
function. It runs inline on the event loop when the connection is free and the database lock can be taken
at once (WAL with synchronous=NORMAL does not fsync on commit, so a short transaction costs tens of
microseconds, less than the hop); when another process holds the write lock, it goes to the store's own
thread, which waits for the lock with busy_timeout without blocking the loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TypeVar

from engine.errors import Busy, StoreError

T = TypeVar("T")

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
BUSY_TIMEOUT_MS = 10_000


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="switchboard-db")
        self._conn: sqlite3.Connection | None = None
        # Serialises the connection between the event loop (inline calls) and the store thread.
        self._lock = threading.Lock()

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves for every read-then-write.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            for pragma in PRAGMAS:
                conn.execute(pragma)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            _migrate(conn)
            conn.execute("PRAGMA busy_timeout=0")
            self._conn = conn
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot create data folder {self.path.parent}: {exc.strerror}") from exc

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = True) -> T:
        """Run ``fn(conn)``: inline when the connection and the lock are free, else in the store's thread.

        ``fn`` must raise ``Busy`` before writing anything when it cannot take the write lock at once
        (``transaction`` does); it is then run again in the store's thread, which waits for the lock.
        """
        conn = self._connection()
        if inline and self._lock.acquire(blocking=False):
            try:
                return fn(conn)
            except Busy:
                pass
            finally:
                self._lock.release()
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._invoke_waiting, fn)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("database is not open")
        return self._conn

    def _invoke_waiting(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        with self._lock:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            try:
                return fn(conn)
            except Busy as exc:
                raise StoreError(f"database is busy: another process held its lock for {BUSY_TIMEOUT_MS} ms") from exc
            finally:
                conn.execute("PRAGMA busy_timeout=0")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:

            def _close() -> None:
                with self._lock:
                    conn.close()

            await asyncio.get_running_loop().run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply numbered migrations; each with its version record in one transaction."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
    folder = resources.files("engine.store").joinpath("migrations")
    scripts = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    for script in scripts:
        version = int(script.name.split("_", 1)[0])
        if version in applied:
            continue
        statements = script.read_text(encoding="utf-8")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split_sql(statements):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version(version, applied_at) VALUES (?, datetime('now'))", (version,)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
