-- Subscription usage windows (engine/quota.py): what the CLI reported, Switchboard's own count inside the window,
-- the jobs moved or deferred for it, and the token counts at which past windows ran out (a JSON list).
CREATE TABLE quota_windows (
    backend TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'unknown',
    resets_at REAL,
    utilization REAL,
    started_at REAL,
    used_tokens INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    moved INTEGER NOT NULL DEFAULT 0,
    deferred INTEGER NOT NULL DEFAULT 0,
    exhaustions TEXT NOT NULL DEFAULT '[]',
    updated_at REAL NOT NULL,
    PRIMARY KEY (backend, kind)
);
