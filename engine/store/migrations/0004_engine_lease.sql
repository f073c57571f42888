-- One engine per data folder, recorded in the database: the lock file can be deleted by accident, this row
-- cannot be taken while its holder lives (renewed by the engine's liveness heartbeat; see engine_lease.py).
CREATE TABLE engine_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_started TEXT,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
