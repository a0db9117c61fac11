-- One record per call: the legs linked by the uuids they name, built incrementally inside
-- the distilleries' commit. `call_key` is a uuid of one of the call's legs, fixed when the
-- call is first seen (the smallest key survives a merge); `call_id` is the call's first A-leg.
CREATE TABLE IF NOT EXISTS calls (
    call_key BLOB PRIMARY KEY,
    call_id BLOB NOT NULL,
    caller TEXT NOT NULL DEFAULT '',
    callee TEXT NOT NULL DEFAULT '',
    start_epoch INTEGER NOT NULL DEFAULT 0,
    answer_epoch INTEGER NOT NULL DEFAULT 0,
    end_epoch INTEGER NOT NULL DEFAULT 0,
    talk_seconds INTEGER NOT NULL DEFAULT 0,
    answered TEXT NOT NULL DEFAULT 'n' CHECK (answered IN ('n', 'y')),
    hangup_cause TEXT NOT NULL DEFAULT '',
    legs INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_calls_call_id ON calls (call_id);
CREATE INDEX IF NOT EXISTS idx_calls_start ON calls (start_epoch);

-- Every leg of a call, and every uuid a leg named before its own CDR arrived (seen='n'), so a
-- leg arriving later finds its call.
CREATE TABLE IF NOT EXISTS call_legs (
    uuid BLOB PRIMARY KEY,
    call_key BLOB NOT NULL,
    seen TEXT NOT NULL DEFAULT 'n' CHECK (seen IN ('n', 'y')),
    leg TEXT NOT NULL DEFAULT '',
    loopback TEXT NOT NULL DEFAULT 'n' CHECK (loopback IN ('n', 'y')),
    start_epoch INTEGER NOT NULL DEFAULT 0,
    answer_epoch INTEGER NOT NULL DEFAULT 0,
    end_epoch INTEGER NOT NULL DEFAULT 0,
    billsec INTEGER NOT NULL DEFAULT 0,
    caller TEXT NOT NULL DEFAULT '',
    callee TEXT NOT NULL DEFAULT '',
    hangup_cause TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS idx_call_legs_call_key ON call_legs (call_key);

-- A call's legs find their tasks (a late leg makes the call's calllog due again; purge).
CREATE INDEX IF NOT EXISTS idx_tasks_normalized ON tasks (id_normalized_cdrs);
