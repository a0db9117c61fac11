-- One record per call: the legs linked by the uuids they name, built incrementally inside
-- the distilleries' commit. `call_key` is a uuid of one of the call's legs, fixed when the
-- call is first seen (the smallest key survives a merge); `call_id` is the call's first A-leg.
CREATE TABLE IF NOT EXISTS `calls` (
    `call_key` BINARY(16) PRIMARY KEY,
    `call_id` BINARY(16) NOT NULL,
    `caller` VARCHAR(255) NOT NULL DEFAULT '',
    `callee` VARCHAR(255) NOT NULL DEFAULT '',
    `start_epoch` BIGINT NOT NULL DEFAULT 0,
    `answer_epoch` BIGINT NOT NULL DEFAULT 0,
    `end_epoch` BIGINT NOT NULL DEFAULT 0,
    `talk_seconds` BIGINT NOT NULL DEFAULT 0,
    `answered` ENUM('n', 'y') NOT NULL DEFAULT 'n',
    `hangup_cause` VARCHAR(64) NOT NULL DEFAULT '',
    `legs` INT NOT NULL DEFAULT 0,
    KEY `idx_call_id` (`call_id`),
    KEY `idx_start` (`start_epoch`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Every leg of a call, and every uuid a leg named before its own CDR arrived (seen='n'), so a
-- leg arriving later finds its call.
CREATE TABLE IF NOT EXISTS `call_legs` (
    `uuid` BINARY(16) PRIMARY KEY,
    `call_key` BINARY(16) NOT NULL,
    `seen` ENUM('n', 'y') NOT NULL DEFAULT 'n',
    `leg` VARCHAR(1) NOT NULL DEFAULT '',
    `loopback` ENUM('n', 'y') NOT NULL DEFAULT 'n',
    `start_epoch` BIGINT NOT NULL DEFAULT 0,
    `answer_epoch` BIGINT NOT NULL DEFAULT 0,
    `end_epoch` BIGINT NOT NULL DEFAULT 0,
    `billsec` BIGINT NOT NULL DEFAULT 0,
    `caller` VARCHAR(255) NOT NULL DEFAULT '',
    `callee` VARCHAR(255) NOT NULL DEFAULT '',
    `hangup_cause` VARCHAR(64) NOT NULL DEFAULT '',
    KEY `idx_call_key` (`call_key`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
