-- The seed's CDR database in SQLite types. Enums become CHECK constraints, BINARY(16)
-- a 16-byte BLOB, DATETIME text 'YYYY-MM-DD HH:MM:SS' (UTC), which sorts as time does.
CREATE TABLE IF NOT EXISTS cdr_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid BLOB NOT NULL UNIQUE,
    freeswitch_host TEXT NOT NULL,
    path TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    done TEXT NOT NULL DEFAULT 'n' CHECK (done IN ('n', 'y', 'error')),
    next_attempt TEXT,
    retry INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_done_next_attempt ON cdr_queue (done, next_attempt);

CREATE TABLE IF NOT EXISTS normalized_cdrs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid BLOB NOT NULL UNIQUE,
    path TEXT NOT NULL,
    cdr_path TEXT,
    TableSuffix INTEGER NOT NULL,
    rmOrgID INTEGER NOT NULL,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_org_suffix ON normalized_cdrs (rmOrgID, TableSuffix);

CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    id_normalized_cdrs INTEGER NOT NULL REFERENCES normalized_cdrs (id),
    task_type TEXT NOT NULL,
    create_time TEXT NOT NULL,
    next_attempt TEXT NOT NULL,
    retry INTEGER NOT NULL DEFAULT 0,
    done TEXT NOT NULL DEFAULT 'n' CHECK (done IN ('n', 'y', 'error')),
    node_index INTEGER NOT NULL DEFAULT 0,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS idx_type_done_next ON tasks (task_type, done, next_attempt);

CREATE TABLE IF NOT EXISTS cdr_queue_error (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    id_cdr_queue INTEGER NOT NULL UNIQUE,
    description TEXT,
    critical TEXT NOT NULL DEFAULT 'n' CHECK (critical IN ('n', 'y')),
    first_error_date TEXT,
    last_error_date TEXT
);
