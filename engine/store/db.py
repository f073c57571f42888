"""The SQLite connection: one writer connection living in one dedicated thread.

Why not a statement-per-await driver: every await is a thread round trip (about 90 µs), which caps a job
queue near 1,000 jobs a second. Here a whole transaction is one plain function that runs in the store's
thread, so each transaction costs one hop however many statements it has.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)


class StoreError(Exception):
    """The database cannot be opened or written (corrupt file, full disk, permissions)."""


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="switchboard-db")
        self._conn: sqlite3.Connection | None = None

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
            self._conn = conn
            _migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot create data folder {self.path.parent}: {exc.strerror}") from exc

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the store's thread: one hop for the whole function."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._invoke, fn)

    def _invoke(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreError("database is not open")
        return fn(self._conn)

    async def close(self) -> None:
        def _close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self.call(_close)
            self._conn = None
        self._executor.shutdown(wait=True)


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply numbered migrations; each with its version record in one transaction."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
    folder = resources.files("engine.store").joinpath("migrations")
    scripts = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))
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
