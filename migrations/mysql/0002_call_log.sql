-- The calllog task's sink: one row per A-leg, keyed by the call uuid so a task that runs
-- twice (a lease expired mid-write) leaves one row.
CREATE TABLE IF NOT EXISTS `call_log` (
    `id` BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    `uuid` BINARY(16) NOT NULL,
    `rmOrgID` INT NOT NULL,
    `TableSuffix` INT NOT NULL,
    `direction` VARCHAR(16) NOT NULL,
    `caller_id_number` VARCHAR(255) NOT NULL,
    `destination_number` VARCHAR(255) NOT NULL,
    `start_epoch` BIGINT NOT NULL,
    `answer_epoch` BIGINT NOT NULL,
    `end_epoch` BIGINT NOT NULL,
    `duration` INT NOT NULL,
    `billsec` INT NOT NULL,
    `hangup_cause` VARCHAR(64) NOT NULL,
    `recording_path` VARCHAR(1024),
    `created_at` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE KEY `idx_uuid` (`uuid`),
    KEY `idx_org_start` (`rmOrgID`, `start_epoch`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
