-- The calllog task's sink: one row per A-leg, keyed by the call uuid.
CREATE TABLE IF NOT EXISTS call_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid BLOB NOT NULL UNIQUE,
    rmOrgID INTEGER NOT NULL,
    TableSuffix INTEGER NOT NULL,
    direction TEXT NOT NULL,
    caller_id_number TEXT NOT NULL,
    destination_number TEXT NOT NULL,
    start_epoch INTEGER NOT NULL,
    answer_epoch INTEGER NOT NULL,
    end_epoch INTEGER NOT NULL,
    duration INTEGER NOT NULL,
    billsec INTEGER NOT NULL,
    hangup_cause TEXT NOT NULL,
    recording_path TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_call_log_org_start ON call_log (rmOrgID, start_epoch);
