-- One row per cdrmunch process that claims work (distiller or tasks role): its shard of the
-- ids and a heartbeat counter (see the MySQL migration: the two-SDC setup is MySQL's; on
-- SQLite every process has the one shard and the table only lists who is working).
CREATE TABLE cdrmunch_nodes (
    instance_id TEXT NOT NULL PRIMARY KEY,
    boot TEXT NOT NULL,
    shard_residue INTEGER NOT NULL,
    shard_increment INTEGER NOT NULL,
    roles TEXT NOT NULL,
    beats INTEGER NOT NULL,
    last_beat TEXT NOT NULL
);
