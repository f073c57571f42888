-- Switchboard schema, version 1. Times are epoch seconds (REAL, UTC).

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    prompt TEXT NOT NULL,
    project TEXT,
    source TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    tier INTEGER NOT NULL,
    run_after REAL NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    max_revisions INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at REAL,
    heartbeat_at REAL,
    idempotency_key TEXT,
    parent_id INTEGER REFERENCES jobs(id),
    chat_id INTEGER,
    deadline REAL,
    review_required INTEGER NOT NULL DEFAULT 0,
    maker_backend TEXT,
    maker_family TEXT,
    session_id TEXT,
    workspace TEXT,
    result_summary TEXT,
    result_path TEXT,
    result_text TEXT,
    progress TEXT,
    last_failure_class TEXT,
    last_error TEXT,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cache_read INTEGER NOT NULL DEFAULT 0,
    cache_write INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    operator_approved INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
-- Same key, same job, while the job is alive or done; a failed or cancelled job frees its key.
CREATE UNIQUE INDEX jobs_idempotency ON jobs(idempotency_key)
    WHERE idempotency_key IS NOT NULL AND state NOT IN ('failed', 'cancelled');
CREATE INDEX jobs_claimable ON jobs(state, priority, run_after, id);
CREATE INDEX jobs_lease ON jobs(lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_parent ON jobs(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_finished ON jobs(finished_at);

CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    backend TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    family TEXT NOT NULL DEFAULT '',
    purpose TEXT NOT NULL DEFAULT 'make',
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    http_status INTEGER,
    retry_after_s REAL,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cache_read INTEGER NOT NULL DEFAULT 0,
    cache_write INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    latency_ms REAL,
    error TEXT
);
CREATE INDEX attempts_job ON attempts(job_id);
CREATE INDEX attempts_finished ON attempts(finished_at);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    job_id INTEGER,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    reason TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_job ON events(job_id);

CREATE TABLE reviews (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    revision INTEGER NOT NULL,
    reviewer_backend TEXT NOT NULL,
    reviewer_family TEXT NOT NULL,
    maker_family TEXT NOT NULL,
    scores TEXT NOT NULL DEFAULT '{}',
    score REAL NOT NULL,
    passed INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    critique TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    -- A review by the maker's own family is never a review.
    CHECK (reviewer_family <> maker_family)
);
CREATE INDEX reviews_job ON reviews(job_id);

-- The quality gate as a wall in the database: a job that requires review cannot become 'done' without a
-- passing review of its current revision by another family, unless the operator approved it explicitly.
CREATE TRIGGER jobs_review_gate
BEFORE UPDATE OF state ON jobs
WHEN NEW.state = 'done' AND NEW.review_required = 1 AND NEW.operator_approved = 0
    AND NOT EXISTS (
        SELECT 1 FROM reviews r
        WHERE r.job_id = NEW.id AND r.passed = 1 AND r.revision = NEW.revision
          AND r.reviewer_family <> COALESCE(NEW.maker_family, '')
    )
BEGIN
    SELECT RAISE(ABORT, 'quality gate: a reviewed job needs a passing review by another model family');
END;

CREATE TRIGGER jobs_review_gate_insert
BEFORE INSERT ON jobs
WHEN NEW.state = 'done' AND NEW.review_required = 1 AND NEW.operator_approved = 0
BEGIN
    SELECT RAISE(ABORT, 'quality gate: a reviewed job needs a passing review by another model family');
END;

CREATE TABLE backend_state (
    name TEXT PRIMARY KEY,
    paused_until REAL,
    pause_reason TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_ok_at REAL,
    last_error TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    updated_at REAL
);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    chat_id INTEGER,
    text TEXT NOT NULL,
    urgent INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    telegram_message_id INTEGER,
    job_id INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);

CREATE TABLE inbox (
    update_id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'received'
);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    chat_id INTEGER NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    job_id INTEGER,
    created_at REAL NOT NULL
);
CREATE INDEX messages_chat ON messages(chat_id, id);

CREATE TABLE schedules (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    job_type TEXT NOT NULL,
    prompt TEXT NOT NULL,
    project TEXT,
    interval_s REAL,
    daily_at TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    catch_up INTEGER NOT NULL DEFAULT 1,
    last_run_at REAL,
    next_run_at REAL NOT NULL,
    created_at REAL NOT NULL,
    CHECK ((interval_s IS NULL) <> (daily_at IS NULL))
);

CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    goal TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'active',
    workspace TEXT,
    last_advanced_at REAL,
    created_at REAL NOT NULL
);

-- Small key/value facts the engine must remember across restarts (backpressure on/off, seen failure signatures).
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
