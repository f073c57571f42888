-- Subscription usage windows (engine/quota.py), per plan (the backends of one CLI login and model family) and kind:
-- what the CLI reported, Switchboard's own count inside the window, the jobs moved or deferred for it, the token counts at which past windows ran out (a JSON list), and the first
-- reported share in the window with Switchboard's count then (the window's size is scaled from the growth since).
CREATE TABLE quota_windows (
    plan TEXT NOT NULL,
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
    base_share REAL,
    base_tokens INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (plan, kind)
);
