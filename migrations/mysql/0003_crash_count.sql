-- How many distilleries a CDR has taken down, kept with its error row so a process restart
-- forgives nothing: at `distiller.poison_threshold` the CDR ends done='error', critical='y'.
ALTER TABLE `cdr_queue_error` ADD COLUMN `crashes` INT UNSIGNED NOT NULL DEFAULT 0;
