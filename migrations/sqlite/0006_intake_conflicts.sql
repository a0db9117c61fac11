-- Re-posts of a queued CDR whose bytes differ from the first: the first stays the billing
-- truth, the other body is kept beside it as evidence and listed here (`cdrmunch status`,
-- `cdrmunch why`). kind: 'kept_first' (evidence written) or 'replaced' (the first had
-- failed for good, so the re-post replaced it and was queued again).
CREATE TABLE intake_conflicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid BLOB NOT NULL,
    kind TEXT NOT NULL,
    first_path TEXT NOT NULL,
    other_path TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
CREATE INDEX idx_intake_conflicts_uuid ON intake_conflicts (uuid);
