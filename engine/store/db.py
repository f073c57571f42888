"""The SQLite connection: one writer connection, used by whole-transaction functions.

Why not a statement-per-await driver: every await is a thread round trip (about 90 µs, and 200 µs with a
busy event loop), which caps a job queue near 1,000 jobs a second. Here a whole transaction is one plain
function. It runs inline on the event loop when the connection is free and the database lock can be taken
at once (WAL with synchronous=NORMAL does not fsync on commit, so a short transaction costs tens of
microseconds, less than the hop); when another process holds the write lock, it goes to the store's own
thread, which waits for the lock with busy_timeout without blocking the loop.

A ``blocking`` database (a CLI command on the store: a few transactions, then exit) runs every transaction in
the calling thread and waits for the lock there: it needs no event loop and no thread, so such a command
loads neither asyncio nor a thread pool (asyncio alone is 6% of its start-up).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from engine.errors import Busy, LostDatabase, StoreError

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

T = TypeVar("T")

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
BUSY_TIMEOUT_MS = 10_000
BUSY_SLICE_MS = 100  # a blocking database's wait for the lock, cut into slices of this (see _invoke_waiting)


class Database:
    def __init__(self, path: Path, *, blocking: bool = False) -> None:
        self.path = path
        self.blocking = blocking
        self._executor: ThreadPoolExecutor | None = None  # the store's thread, made at open unless blocking
        self._conn: sqlite3.Connection | None = None
        # Serialises the connection between the event loop (inline calls) and the store thread.
        self._lock = threading.Lock()

    async def open(self) -> None:
        if self.blocking:
            self._open()
            return
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="switchboard-db")
        await self._in_thread(self._open)

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        import asyncio  # loaded here, not at the top: a blocking database never needs it

        assert self._executor is not None, "open() makes the store's thread"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            if not existed:
                _refuse_if_used(self.path, "is missing", _earlier_use(self.path.parent, memory=False))
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves for every read-then-write.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                if existed and not _has_schema(conn):  # checked before any pragma writes to the file
                    _refuse_if_used(self.path, "is empty (no tables)", _earlier_use(self.path.parent, memory=True))
                conn.row_factory = sqlite3.Row
                for pragma in PRAGMAS:
                    conn.execute(pragma)
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                _migrate(conn)
                conn.execute("PRAGMA busy_timeout=0")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        except sqlite3.OperationalError as exc:
            raise translate(exc, self.path) from exc
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
        if self.blocking:
            return self._invoke_waiting(fn)
        if inline and self._lock.acquire(blocking=False):
            try:
                return fn(conn)
            except Busy:
                pass
            except sqlite3.OperationalError as exc:
                raise translate(exc, self.path) from exc
            finally:
                self._lock.release()
        return await self._in_thread(lambda: self._invoke_waiting(fn))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("database is not open")
        return self._conn

    def _invoke_waiting(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` once the lock can be taken, waiting up to ``BUSY_TIMEOUT_MS`` for it. A blocking database
        waits in slices of ``BUSY_SLICE_MS``, running ``fn`` again after each: Python runs its signal handlers
        only between SQLite's calls, so the operator's Ctrl-C is seen within a slice, not after the whole wait."""
        conn = self._connection()
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        with self._lock:
            conn.execute(f"PRAGMA busy_timeout={BUSY_SLICE_MS if self.blocking else BUSY_TIMEOUT_MS}")
            try:
                while True:
                    try:
                        return fn(conn)
                    except Busy as exc:  # raised before anything was written: running fn again is safe
                        if not self.blocking or time.monotonic() >= deadline:
                            raise StoreError(_LOCKED.format(seconds=BUSY_TIMEOUT_MS / 1000)) from exc
            except sqlite3.OperationalError as exc:
                raise translate(exc, self.path) from exc
            finally:
                with contextlib.suppress(sqlite3.Error):  # never hide the error above behind this one
                    conn.execute("PRAGMA busy_timeout=0")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:

            def _close() -> None:
                with self._lock:
                    conn.close()

            if self._executor is None:
                _close()
            else:
                await self._in_thread(_close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)


_LOCKED = "the database is locked: another process held it for more than {seconds:.0f} s"
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 5, 6, 8, 10, 13, 14


def translate(exc: sqlite3.OperationalError, path: Path) -> StoreError:
    """SQLite's operational errors as one sentence an operator can act on (disk full, read-only, locked)."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary result code
    text = str(exc)
    if code == _SQLITE_FULL or "disk is full" in text:
        return StoreError(f"database or disk is full: free space on the disk holding {path.parent}")
    if code == _SQLITE_READONLY or "readonly" in text:
        return StoreError(f"the data folder is read-only: switchboard cannot write {path}")
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text:
        return StoreError(_LOCKED.format(seconds=BUSY_TIMEOUT_MS / 1000))
    if code == _SQLITE_CANTOPEN:
        return StoreError(f"cannot open database {path}: check that the data folder exists and is writable")
    if code == _SQLITE_IOERR:
        return StoreError(f"disk I/O error on {path}: the disk may be full or failing")
    return StoreError(f"database error on {path}: {text}")


def _has_schema(conn: sqlite3.Connection) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    return conn.execute(sql).fetchone() is not None


def _earlier_use(home: Path, *, memory: bool) -> list[str]:
    """Signs that this data folder was used before. Job and project folders are made only by an engine with a
    database; memory (``switchboard memory``) can be used before any database exists, so it counts only
    when the database file is there but empty."""
    found = []
    for folder, what in (("jobs", "job folder(s) in jobs/"), ("projects", "project folder(s) in projects/")):
        count = _entries(home / folder)
        if count:
            found.append(f"{count} {what}")
    if memory:
        versions = _entries(home / "core_versions")
        if versions:
            found.append(f"{versions} core.md version(s)")
        if (home / "memory.lance").exists():
            found.append("memory.lance")
    return found


def _entries(folder: Path) -> int:
    try:
        return sum(1 for _ in folder.iterdir())
    except OSError:  # absent (or unreadable: then it says nothing either way)
        return 0


def _refuse_if_used(path: Path, state: str, found: list[str]) -> None:
    if found:
        raise LostDatabase(
            f"{path} {state} but the data folder was used before ({', '.join(found)}): starting would begin "
            f"a new empty database and lose its jobs, so nothing was started; restore {path.name} from a "
            f"backup, or move the folder {path.parent} aside to start afresh"
        )


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
            rollback(conn)
            raise


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open. After SQLITE_FULL (and some I/O errors) SQLite has rolled it
    back itself, and a second ROLLBACK would raise "cannot rollback - no transaction is active", hiding the
    real error."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the original error is the one worth telling
            conn.execute("ROLLBACK")


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
