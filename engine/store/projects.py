"""Projects: add, list and read them, mark one advanced, and count its unfinished jobs; the engine's test runs
and the jobs whose worktrees may be pruned."""

from __future__ import annotations

import sqlite3

from engine.models import Job, Project, TestRunRecord
from engine.store.core import StoreCore
from engine.store.rows import _job


class ProjectsMixin(StoreCore):
    """The ``Store`` methods on projects."""

    async def add_project(self, name: str, goal: str = "", workspace: str | None = None, *, path: str | None = None,
                          test_command: str | None = None) -> Project:
        def run(conn: sqlite3.Connection, now: float) -> Project:
            # "a/b", "a b" and "A-B" are one folder: the second such name is refused, never a shared folder.
            sql = "SELECT name FROM projects WHERE workspace IS NOT NULL AND lower(workspace) = lower(?)"
            same = conn.execute(sql, (workspace,)).fetchone() if workspace is not None else None
            if same is not None and same[0] != name:
                raise ValueError(
                    f"a project named {same[0]!r} already exists, and {name!r} would share its folder "
                    "(names are compared as folder names: case, spaces and punctuation aside); choose another name"
                )
            if path is not None:
                other = conn.execute("SELECT name FROM projects WHERE path = ?", (path,)).fetchone()
                if other is not None:
                    raise ValueError(f"the project {other[0]!r} already works on {path}")
            cur = conn.execute(
                "INSERT INTO projects(name, goal, workspace, path, test_command, created_at, last_advanced_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, goal, workspace, path, test_command, now, now),
            )
            return Project(**dict(conn.execute("SELECT * FROM projects WHERE id = ?", (cur.lastrowid,)).fetchone()))

        try:
            return await self._tx(run)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"a project named {name!r} already exists") from exc

    async def list_projects(self, status: str | None = None) -> list[Project]:
        sql = "SELECT * FROM projects" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        params = (status,) if status else ()
        return await self._read(lambda conn, _: [Project(**dict(r)) for r in conn.execute(sql, params)])

    async def get_project(self, name: str) -> Project | None:
        sql = "SELECT * FROM projects WHERE name = ?"
        return await self._read(
            lambda conn, _: Project(**dict(r)) if (r := conn.execute(sql, (name,)).fetchone()) else None
        )

    async def touch_project(self, name: str, status: str | None = None) -> None:
        await self._tx(
            lambda conn, now: conn.execute(
                "UPDATE projects SET last_advanced_at = ?, status = COALESCE(?, status) WHERE name = ?",
                (now, status, name),
            )
        )

    async def open_project_jobs(self, name: str) -> int:
        """Jobs of a project that are not finished (queued, running, waiting for a backend or the operator)."""
        sql = "SELECT COUNT(*) FROM jobs WHERE project = ? AND state NOT IN ('done', 'failed', 'cancelled')"
        return await self._read(lambda conn, _: conn.execute(sql, (name,)).fetchone()[0])

    async def add_test_run(self, job_id: int, revision: int, command: str, exit_code: int | None, timed_out: bool,
                           duration_s: float, output: str, summary: str) -> None:
        await self._tx(
            lambda conn, now: conn.execute(
                "INSERT INTO test_runs(job_id, revision, command, exit_code, timed_out, duration_s, output, summary, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, revision, command, exit_code, int(timed_out), duration_s, output, summary, now),
            )
        )

    async def test_runs(self, job_id: int) -> list[TestRunRecord]:
        sql = "SELECT * FROM test_runs WHERE job_id = ? ORDER BY id"
        return await self._read(lambda conn, _: [TestRunRecord(**dict(r)) for r in conn.execute(sql, (job_id,))])

    async def prunable_worktrees(self, finished_before: float) -> list[Job]:
        """Finished jobs whose worktree is still there, finished before ``finished_before``."""
        sql = ("SELECT * FROM jobs WHERE branch IS NOT NULL AND workspace IS NOT NULL AND worktree_pruned_at IS NULL "
               "AND state IN ('done', 'failed', 'cancelled') AND COALESCE(finished_at, updated_at) < ? ORDER BY id")
        return await self._read(lambda conn, _: [_job(r) for r in conn.execute(sql, (finished_before,))])

    async def mark_worktree_pruned(self, job_id: int) -> None:
        await self._tx(
            lambda conn, now: conn.execute("UPDATE jobs SET worktree_pruned_at = ? WHERE id = ?", (now, job_id))
        )
