-- Re-posts of a queued CDR whose bytes differ from the first: the first stays the billing
-- truth, the other body is kept beside it as evidence and listed here (`cdrmunch status`,
-- `cdrmunch why`). kind: 'kept_first' (evidence written) or 'replaced' (the first had
-- failed for good, so the re-post replaced it and was queued again).
CREATE TABLE intake_conflicts (
    `id` BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    `uuid` BINARY(16) NOT NULL,
    `kind` VARCHAR(16) NOT NULL,
    `first_path` VARCHAR(1024) NOT NULL,
    `other_path` VARCHAR(1024) NOT NULL,
    `create_time` BIGINT NOT NULL,
    KEY `idx_intake_conflicts_uuid` (`uuid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
