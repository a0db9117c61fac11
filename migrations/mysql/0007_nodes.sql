-- One row per cdrmunch process that claims work (distiller or tasks role): its shard of the
-- ids (`id % shard_increment = shard_residue`, from the server's auto-increment settings in
-- the two-SDC master-master setup) and a heartbeat counter. Each process writes only its own
-- row, so master-master replication of this table never conflicts; the others read it to
-- take over a shard whose counter stopped moving.
CREATE TABLE cdrmunch_nodes (
    `instance_id` VARCHAR(100) NOT NULL PRIMARY KEY,
    `boot` CHAR(36) NOT NULL,
    `shard_residue` INT UNSIGNED NOT NULL,
    `shard_increment` INT UNSIGNED NOT NULL,
    `roles` VARCHAR(64) NOT NULL,
    `beats` BIGINT UNSIGNED NOT NULL,
    `last_beat` DATETIME NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
