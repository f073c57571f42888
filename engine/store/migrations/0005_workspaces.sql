-- Projects bound to a folder of the operator's (issue 13): the folder, and the test command the engine runs.
ALTER TABLE projects ADD COLUMN path TEXT;
ALTER TABLE projects ADD COLUMN test_command TEXT;
-- A job of a git project works on a branch of its own, in a worktree, from this commit.
ALTER TABLE jobs ADD COLUMN branch TEXT;
ALTER TABLE jobs ADD COLUMN base_commit TEXT;
-- What the done notice shows of the work (diff stat, test summary) and the files it attaches (one path a line).
ALTER TABLE jobs ADD COLUMN work_summary TEXT;
ALTER TABLE jobs ADD COLUMN work_documents TEXT;
ALTER TABLE jobs ADD COLUMN worktree_pruned_at REAL;
-- Every test run the engine made itself, in a job's worktree after its maker finished.
CREATE TABLE test_runs (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    revision INTEGER NOT NULL,
    command TEXT NOT NULL,
    exit_code INTEGER,
    timed_out INTEGER NOT NULL DEFAULT 0,
    duration_s REAL NOT NULL,
    output TEXT NOT NULL,
    summary TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX test_runs_job ON test_runs(job_id, id);
