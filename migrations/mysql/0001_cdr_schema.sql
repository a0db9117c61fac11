-- The seed's CDR database, as written. Leasing needs nothing more: a claim sets
-- next_attempt = now + lease, so an expired lease makes the row due again.
CREATE TABLE IF NOT EXISTS `cdr_queue` (
    `id` BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    `uuid` BINARY(16) NOT NULL,
    `freeswitch_host` VARCHAR(255) NOT NULL,
    `path` VARCHAR(1024) NOT NULL,
    `create_time` INT UNSIGNED NOT NULL,
    `done` ENUM('n', 'y', 'error') DEFAULT 'n',
    `next_attempt` DATETIME,
    `retry` INT UNSIGNED DEFAULT 0,
    UNIQUE KEY `idx_uuid` (`uuid`),
    KEY `idx_done_next_attempt` (`done`, `next_attempt`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `normalized_cdrs` (
    `id` BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    `uuid` BINARY(16) NOT NULL,
    `path` VARCHAR(1024) NOT NULL,
    `cdr_path` VARCHAR(1024),
    `TableSuffix` INT NOT NULL,
    `rmOrgID` INT NOT NULL,
    `created_at` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE KEY `idx_uuid` (`uuid`),
    KEY `idx_org_suffix` (`rmOrgID`, `TableSuffix`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `tasks` (
    `id` BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    `id_normalized_cdrs` BIGINT UNSIGNED NOT NULL,
    `task_type` VARCHAR(50) NOT NULL,
    `create_time` DATETIME NOT NULL,
    `next_attempt` DATETIME NOT NULL,
    `retry` INT UNSIGNED DEFAULT 0,
    `done` ENUM('n', 'y', 'error') DEFAULT 'n',
    `node_index` INT UNSIGNED DEFAULT 0,
    `error_message` TEXT,
    KEY `idx_type_done_next` (`task_type`, `done`, `next_attempt`),
    FOREIGN KEY (`id_normalized_cdrs`) REFERENCES `normalized_cdrs`(`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `cdr_queue_error` (
    `id` BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    `id_cdr_queue` BIGINT UNSIGNED NOT NULL,
    `description` TEXT,
    `critical` ENUM('n', 'y') DEFAULT 'n',
    `first_error_date` DATETIME,
    `last_error_date` DATETIME,
    UNIQUE KEY `idx_cdr_queue` (`id_cdr_queue`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
